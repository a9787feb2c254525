"""Name -> thing registries: the methods, the backbones and the data sources.

One :class:`Registry` class serves all three. A module registers what it defines with a
decorator carrying the entry's metadata::

    @METHODS.register("kd", display_name="KD", defaults={"temperature": 4.0, "alpha": 0.9})
    class KD(Method): ...

and the registry's package is searched for such modules (:meth:`Registry.discover` imports
every module of it once, as timm's and big_vision's registries find their models), so
adding a method, a backbone or a source is one new file in its package.

Each entry carries its ``display_name`` (what report tables print) and ``defaults`` (a
method's config group, a backbone body's keyword defaults, a source's image size and
augmentation). :meth:`Registry.get` raises the registry's typed error with a "did you
mean" and the valid names. Registering the same qualified object again (a module reload)
replaces the entry; a different object under a taken name is an error.

The method and backbone modules import TensorFlow, but the config schema, the CLI's flag
check and ``cskd-report`` must work before (or without) that import. So the registries
also read their package's *declarations* without importing it: :meth:`Registry.declared`
parses each module with :mod:`ast` and keeps the decorator calls whose arguments are
literals. :meth:`Registry.entries` with ``declared=True`` is the union of those and of
what is registered in memory (a method registered at run time by a module outside the
package is there too). This module imports no TensorFlow, only :mod:`cskd_tf.errors`.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from cskd_tf.errors import ConfigError, ModelError

@dataclass(frozen=True)
class Entry:
    """One registered name.

    ``obj`` is the registered class or function, None for an entry only declared in a
    module not imported yet. ``meta`` holds the registry's own metadata (a
    :class:`cskd_tf.models.ModelSpec` for backbones; the extra literal keywords of the
    decorator call otherwise). A name ending in ``:`` is a family: it matches every
    name starting with it (``tfds:`` -> ``tfds:cifar100``).
    """

    name: str
    obj: Any = None
    display_name: str = ""
    defaults: Mapping = field(default_factory=dict)
    meta: Any = None
    module: str = ""

    @property
    def family(self) -> bool:
        return self.name.endswith(":")

    @property
    def choice(self) -> str:
        """How the name reads in a list of valid values (``tfds:<name>`` for a family)."""
        return f"{self.name}<name>" if self.family else self.name


class Registry:
    """Names of one kind of thing, each with an :class:`Entry`.

    Args:
        kind: what a name names, for messages (``"method"``).
        package: the dotted package whose modules register the entries.
        error: the :class:`cskd_tf.errors.CSKDError` subclass for unknown or taken names.
        field: the config field that selects an entry (``--config.<field>`` in messages).
        decorators: names of the decorator functions whose literal calls
            :meth:`declared` reads (``register`` and any module-level alias).
    """

    def __init__(self, kind, package, error=ConfigError, field=None,
                 decorators=("register",)):
        self.kind = kind
        self.package = package
        self.error = error
        self.field = field or kind
        self.decorators = tuple(decorators)
        self._entries: dict[str, Entry] = {}
        self._imported: set[str] = set()

    # ------------------------------------------------------------------ registering
    def register(self, name, *, display_name=None, defaults=None, **meta):
        """Decorator registering a class or function under ``name``; returns it unchanged.

        ``defaults`` is a mapping, or a tuple of keyword names of the registered function
        (of a class's ``__init__``): their default values in the signature become the
        entry's defaults, so they are written once, where the constructor is. Keywords
        other than ``display_name`` and ``defaults`` are kept in ``entry.meta``. Keep all
        of them literals so that :meth:`declared` can read them without an import.
        """
        def decorator(obj):
            self.add(name, obj, display_name=display_name, defaults=defaults, meta=meta)
            return obj
        return decorator

    def add(self, name, obj, *, display_name=None, defaults=None, meta=None) -> Entry:
        """Registers ``obj`` under ``name`` (what :meth:`register` does) and returns the entry."""
        if not isinstance(name, str) or not name or name.strip() != name:
            raise self.error(f"{self.kind} name {name!r} must be a non-empty string without "
                             "surrounding spaces")
        old = self._entries.get(name)
        # The same object again (a module reload) is harmless; a different one under a
        # taken name is almost surely a copy-paste slip that would shadow the first.
        if old is not None and qualified_name(old.obj) != qualified_name(obj):
            raise self.error(f"{self.kind} name {name!r} is already registered by "
                             f"{qualified_name(old.obj)}; register {qualified_name(obj)} "
                             "under another name")
        if isinstance(defaults, (tuple, list)):
            defaults = self._keyword_defaults(name, obj, defaults)
        entry = Entry(name, obj, display_name or name, dict(defaults or {}), meta,
                      getattr(obj, "__module__", ""))
        self._entries[name] = entry
        return entry

    def _keyword_defaults(self, name, obj, keywords):
        function = obj.__init__ if isinstance(obj, type) else obj
        parameters = inspect.signature(function).parameters
        missing = [k for k in keywords
                   if k not in parameters or parameters[k].default is inspect.Parameter.empty]
        if missing:
            raise self.error(f"{self.kind} {name!r} declares defaults {', '.join(missing)} that "
                             f"{qualified_name(obj)} has no keyword default for; give them one "
                             "in its signature")
        return {k: parameters[k].default for k in keywords}

    def remove(self, name):
        """Forgets ``name`` (for tests that register a throwaway entry)."""
        self._entries.pop(name, None)

    # ------------------------------------------------------------------ looking up
    def get(self, name) -> Entry:
        """The entry of ``name`` (a family's entry for a name in that family).

        Raises the registry's error, with the closest valid name and all of them.
        """
        entry = self._lookup(name, self._entries)
        if entry is None:
            raise self.unknown(name)
        return entry

    def unknown(self, name, declared=False):
        """The error for an unknown ``name`` (raise it): "did you mean" and the valid names."""
        entries = self._all(declared)
        plain = [n for n in entries if not n.endswith(":")]
        close = difflib.get_close_matches(str(name), plain, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        choices = ", ".join(sorted(e.choice for e in entries.values()))
        return self.error(f"unknown {self.kind} {name!r}; {hint}set --config.{self.field} to "
                          f"one of: {choices}")

    def check(self, name, declared=True) -> Entry:
        """:meth:`get` over the declared and registered entries (no import needed)."""
        entry = self._lookup(name, self._all(declared))
        if entry is None:
            raise self.unknown(name, declared)
        return entry

    def names(self, declared=False) -> list[str]:
        """Sorted registered names; with ``declared`` also those only declared in source."""
        return sorted(self._all(declared))

    def entries(self, declared=False) -> list[Entry]:
        """The entries in name order; with ``declared`` also those only declared in source."""
        entries = self._all(declared)
        return [entries[n] for n in sorted(entries)]

    def choices(self, declared=False) -> list[str]:
        """The valid values of the config field, for messages (families as ``tfds:<name>``)."""
        return sorted(e.choice for e in self._all(declared).values())

    def __getitem__(self, name):
        """The registered object of ``name`` (``METHODS["cskd"]`` is the class); the
        registry's typed error if unknown."""
        return self.get(name).obj

    def __contains__(self, name):
        return self._lookup(name, self._entries) is not None

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self)} registered: {', '.join(self.names())})"

    @staticmethod
    def _lookup(name, entries):
        if not isinstance(name, str):
            return None
        if name in entries and not name.endswith(":"):
            return entries[name]
        for key, entry in entries.items():
            if key.endswith(":") and name.startswith(key) and len(name) > len(key):
                return entry
        return None

    def _all(self, declared):
        return {**self.declared(), **self._entries} if declared else dict(self._entries)

    # ------------------------------------------------------------------ finding modules
    def discover(self):
        """Imports every module of the package once (each import registers what it defines).

        A later call imports only modules that appeared since (another path entry on the
        package's ``__path__``); returns self.
        """
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            module = f"{self.package}.{info.name}"
            if module not in self._imported:
                importlib.import_module(module)
                self._imported.add(module)
        return self

    def package_dirs(self) -> list[str]:
        """The package's directories, found without importing it (its ``__init__`` may
        import TensorFlow); an imported package's ``__path__`` (which a test may extend)
        is used as it is."""
        package = sys.modules.get(self.package)
        if package is not None:
            return list(package.__path__)
        top, *rest = self.package.split(".")
        # find_spec of a top-level name locates it without running any __init__.
        spec = importlib.util.find_spec(top)
        roots = (spec.submodule_search_locations or []) if spec else []
        return [os.path.join(root, *rest) for root in roots]

    def declared(self) -> dict[str, Entry]:
        """name -> Entry (``obj`` None) for every literal decorator call in the package's
        modules, read with :mod:`ast` (nothing is imported). A declaration whose keywords
        are not literals is kept with what could be read."""
        found = {}
        for info in pkgutil.iter_modules(self.package_dirs()):
            path = os.path.join(info.module_finder.path, f"{info.name}.py")
            if os.path.isfile(path):
                module = f"{self.package}.{info.name}"
                for entry in _declarations(path, module, self.decorators):
                    found.setdefault(entry.name, entry)
        return found


def qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# Parsed declarations by (path, mtime, size): default_config() asks for them often.
_PARSED: dict[tuple, list[Entry]] = {}


def _declarations(path, module, decorators):
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, decorators)
    if key not in _PARSED:
        _PARSED[key] = list(_parse_declarations(path, module, decorators))
    return _PARSED[key]


def _parse_declarations(path, module, decorators):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError:
        return  # importing the module will report it with a traceback
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            func = call.func if call else None
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if called not in decorators or not call.args:
                continue
            name = _literal(call.args[0])
            if not isinstance(name, str):
                continue
            keywords = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
            keywords = {k: v for k, v in keywords.items() if v is not _NOT_LITERAL}
            display_name = keywords.pop("display_name", None) or name
            defaults = keywords.pop("defaults", None) or {}
            if isinstance(defaults, (tuple, list)):
                signature = _signature_defaults(node)
                defaults = {k: signature[k] for k in defaults if k in signature}
            yield Entry(name, None, display_name, dict(defaults), keywords, module)


_NOT_LITERAL = object()


def _signature_defaults(node):
    """Literal keyword defaults of a function node, or of a class node's ``__init__``."""
    if isinstance(node, ast.ClassDef):
        node = next((n for n in node.body
                     if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if node is None:
            return {}
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    found = {a.arg: _literal(d) for a, d in pairs}
    return {k: v for k, v in found.items() if v is not _NOT_LITERAL}


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


# The project's three registries. Their packages import TensorFlow; these objects do not.
METHODS = Registry("method", "cskd_tf.losses.methods", error=ModelError)
MODELS = Registry("model", "cskd_tf.models", error=ModelError)
SOURCES = Registry("dataset", "cskd_tf.data.sources", error=ConfigError,
                   decorators=("register", "register_source"))
