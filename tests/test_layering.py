"""The import rule of docs/architecture.md, enforced over the source with ``ast``.

cskd_tf's parts are stacked in layers; a module may import its own part, any part of a
lower layer, and inside one layer only the edges named in PEER_EDGES. Imports inside
functions count as much as module-level ones (a deferred import is still a dependency),
and only cli/ may define command-line flags or ``__main__`` entry points.

The tools beside the library (benchmarks/, e.g. the speed benchmarks) may import cskd_tf;
cskd_tf never imports them.

The checker runs on the real package and, to show it can fail, on small synthetic
packages in tmp_path holding a deliberate bad import.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cskd_tf"
# Top-level packages of tools beside the library: they may import it, it never imports them.
TOOLS = ("benchmarks",)

# Lowest first. A part is a sub-package (cskd_tf/data/) or a top-level module
# (cskd_tf/runtime.py) named without ".py"; "" is the package's own __init__.py.
LAYERS = [
    # Errors every part raises; version shims that must work before anything else.
    {"", "errors", "compat"},
    # The config schema, and process-wide helpers that need nothing but errors:
    # runtime (seeds, precision, gpu_present), progress (console progress lines), layers
    # (the convolution blocks backbones and BYOT's branches share),
    # images (the eval transform data and serving share), signatures (the serving
    # contract that CSKDModel.export and cskd-export both write), registry (the Registry
    # class and the method/backbone/source registries, readable before their packages load).
    {"config", "runtime", "progress", "layers", "images", "signatures", "registry"},
    # The run folder's file formats: writing, reading and checking what cskd-train leaves
    # in DIR (no TensorFlow; rebuilding a model from a run is training/restore.py).
    {"runs"},
    # The three libraries a run is made of, and the paper's recipes (configs from config).
    {"data", "models", "losses", "recipes"},
    # Measuring: metrics, numpy inference, reports, plots.
    {"evaluation"},
    # The fit loop, resuming and restoring a run (TensorFlow's side), the KD teacher loader.
    {"training"},
    # Applications of trained runs.
    {"serving", "tuning"},
    # The only place with flags and entry points.
    {"cli"},
]

# Imports allowed between different parts of one layer (importer, imported).
PEER_EDGES = {
    ("config", "registry"),  # each method declares its config group (default_config)
    ("models", "losses"),  # CSKDModel's train step runs a losses.Method
    ("signatures", "images"),  # the serving graph runs evaluation's transform
}

# TEMPORARY known exceptions: (importing file relative to cskd_tf/, imported module).
# Each entry is a violation someone has promised to remove; the test fails when an entry
# no longer occurs, so the list only shrinks. The lead deletes entries as fixes merge.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

# Modules that define flags or parse a command line.
FLAG_MODULES = ("absl.flags", "absl.app", "ml_collections.config_flags")


def layer_of(part: str) -> int | None:
    for index, members in enumerate(LAYERS):
        if part in members:
            return index
    return None


def parts_of(root: Path) -> set[str]:
    """Every part of the package at ``root``: sub-packages and top-level modules."""
    parts = {""}
    for entry in root.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            parts.add(entry.name)
        elif entry.suffix == ".py" and entry.name != "__init__.py":
            parts.add(entry.stem)
    return parts


def _module_name(root: Path, path: Path) -> list[str]:
    rel = path.relative_to(root).with_suffix("").parts
    return [root.name, *(rel[:-1] if rel[-1] == "__init__" else rel)]


def imported_modules(root: Path, path: Path, tree: ast.AST):
    """(line, dotted name) of every import in the file, module- or function-level.

    ``from P import n`` yields ``P.n`` (n may be a sub-module); relative imports are
    resolved against the file's own package.
    """
    here = _module_name(root, path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if alias.name != "*" else module


def part_of(dotted: str, package: str, parts: set[str]) -> str | None:
    """The part a dotted module name belongs to; None when it is outside the package."""
    pieces = dotted.split(".")
    if pieces[0] != package:
        return None
    if len(pieces) == 1 or pieces[1] not in parts:
        return ""  # the package itself (e.g. ``from cskd_tf import __version__``)
    return pieces[1]


def find_violations(root: Path, known=frozenset()) -> tuple[list[str], set]:
    """(one message per broken rule, the known exceptions that were seen)."""
    parts = parts_of(root)
    messages, seen = [], set()
    for part in sorted(parts):
        if layer_of(part) is None:
            where = f"{root.name}/{part or '__init__.py'}"
            messages.append(f"{where} is in no layer: add it to LAYERS in tests/test_layering.py "
                            "and to docs/architecture.md")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) > 1:
            part = rel.parts[0]
        else:
            part = "" if rel.name == "__init__.py" else rel.stem
        own = layer_of(part)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, dotted in imported_modules(root, path, tree):
            if part != "cli" and any(dotted == m or dotted.startswith(m + ".")
                                     for m in FLAG_MODULES):
                messages.append(f"{rel}:{line} imports {dotted}: only cli/ defines flags "
                                "and command lines; take arguments instead")
            if any(dotted == tool or dotted.startswith(tool + ".") for tool in TOOLS):
                messages.append(f"{rel}:{line} imports {dotted}: the library never imports "
                                "the tools beside it (benchmarks/); move what both need into "
                                "cskd_tf")
                continue
            target = part_of(dotted, root.name, parts)
            if target is None or target == part or own is None:
                continue
            other = layer_of(target)
            if other is None or other < own or (part, target) in PEER_EDGES:
                continue
            if (str(rel), dotted) in known:
                seen.add((str(rel), dotted))
                continue
            relation = "a higher" if other > own else "a peer"
            messages.append(f"{rel}:{line} imports {dotted}: {part or 'the package'} (layer "
                            f"{own}) may not import {relation} part ({target}, layer {other})")
        if part != "cli" and _has_main_block(tree):
            messages.append(f"{rel} has an `if __name__ == \"__main__\"` block: entry points "
                            "live in cli/ (and pyproject.toml's [project.scripts])")
    return messages, seen


def _has_main_block(tree: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {getattr(n, "id", None) for n in ast.walk(node.test)}
            consts = {getattr(n, "value", None) for n in ast.walk(node.test)}
            if "__name__" in names and "__main__" in consts:
                return True
    return False


def import_cycles(root: Path, part: str) -> list[list[str]]:
    """Import cycles among the modules of one part (function-level imports count too)."""
    modules = {}
    for path in sorted((root / part).rglob("*.py")):
        modules[".".join(_module_name(root, path))] = path
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for _, dotted in imported_modules(root, path, tree):
            while dotted and dotted not in modules:  # ``from M import name``: the module M
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                targets.add(dotted)
        graph[name] = targets
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


# ----------------------------------------------------------------------------- the package
@pytest.mark.parametrize("part", ["training", "runs"])
def test_no_import_cycle_inside_a_part(part):
    assert import_cycles(PACKAGE, part) == []


def test_an_import_cycle_is_found(tmp_path):
    package = write_package(tmp_path, {
        "training/__init__.py": "",
        "training/fit_setup.py": "from cskd_tf.training.teacher import teacher_for\n",
        "training/teacher.py": "from cskd_tf.training.restore import restore_model\n",
        "training/restore.py": "def f():\n    from cskd_tf.training.fit_setup import build\n",
    })
    assert len(import_cycles(package, "training")) == 1


def test_importing_runs_loads_no_tensorflow():
    """Listing and reporting run folders must stay instant: cskd_tf.runs is file formats."""
    import subprocess
    import sys

    code = ("import sys, cskd_tf.runs, cskd_tf.runs.checkpoints; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "[]"


def test_cskd_tf_keeps_its_layers():
    messages, seen = find_violations(PACKAGE, KNOWN_EXCEPTIONS)
    assert not messages, "\n".join(messages)
    stale = KNOWN_EXCEPTIONS - seen
    assert not stale, f"fixed, so remove from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_the_layers_name_every_part_once():
    names = [part for members in LAYERS for part in members]
    assert len(names) == len(set(names))
    for importer, imported in PEER_EDGES:
        assert layer_of(importer) == layer_of(imported) is not None


# ---------------------------------------------------------------- the checker can fail
def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "cskd_tf"
    for name, text in {"__init__.py": "", "errors.py": "", "config.py": "",
                       "data/__init__.py": "", "training/__init__.py": "",
                       "cli/__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_clean_synthetic_package_passes(tmp_path):
    package = write_package(tmp_path, {
        "data/pipeline.py": "from cskd_tf.errors import x\nfrom cskd_tf import config\n",
        "training/trainer.py": "from cskd_tf.data import pipeline\nfrom . import helpers\n",
        "training/helpers.py": "",
        "cli/train.py": ("from absl import flags\nfrom cskd_tf.training import trainer\n"
                         "if __name__ == '__main__':\n    pass\n"),
    })
    assert find_violations(package) == ([], set())


@pytest.mark.parametrize("files, expected", [
    # a lower part imports a higher one at module level ...
    ({"data/pipeline.py": "from cskd_tf.training import trainer\n"},
     "data/pipeline.py:1 imports cskd_tf.training.trainer: data (layer 3) may not import a "
     "higher part (training, layer 5)"),
    # ... or inside a function,
    ({"data/pipeline.py": "def f():\n    import cskd_tf.cli.train\n"},
     "data/pipeline.py:2 imports cskd_tf.cli.train"),
    # or with a relative import that climbs out of its package,
    ({"data/pipeline.py": "from ..training import trainer\n"},
     "data/pipeline.py:1 imports cskd_tf.training.trainer"),
    # or via ``from cskd_tf import <part>``;
    ({"config.py": "from cskd_tf import data\n"},
     "config.py:1 imports cskd_tf.data: config (layer 1) may not import a higher part"),
    # peers of one layer need a declared edge;
    ({"data/pipeline.py": "from cskd_tf.models import build\n", "models/__init__.py": ""},
     "may not import a peer part (models, layer 3)"),
    # only cli/ defines flags and __main__ entry points;
    ({"training/speed.py": "from absl import flags\n"},
     "training/speed.py:1 imports absl.flags: only cli/ defines flags"),
    ({"data/build.py": "if __name__ == '__main__':\n    main()\n"},
     "data/build.py has an `if __name__ == \"__main__\"` block"),
    # the library never imports the tools beside it, at any depth;
    ({"training/fit.py": "def f():\n    from benchmarks.speed import flops\n"},
     "training/fit.py:2 imports benchmarks.speed.flops: the library never imports the tools"),
    ({"runtime.py": "import benchmarks\n"}, "runtime.py:1 imports benchmarks: the library"),
    # and a new part must be given a layer.
    ({"plugins/__init__.py": ""}, "cskd_tf/plugins is in no layer"),
])
def test_a_deliberate_bad_import_is_reported(tmp_path, files, expected):
    messages, _ = find_violations(write_package(tmp_path, files))
    assert any(expected in m for m in messages), messages


def test_known_exceptions_are_skipped_and_reported_as_seen(tmp_path):
    package = write_package(tmp_path, {
        "data/pipeline.py": "def f():\n    from cskd_tf.training import trainer\n"})
    known = {(os.path.join("data", "pipeline.py"), "cskd_tf.training.trainer")}
    assert find_violations(package, known) == ([], known)


# ------------------------------------------------------------------ the tools beside it
def test_the_tools_exist_and_import_the_library():
    """The TOOLS packages are real, and the speed benchmarks are built on cskd_tf (so the
    one-way rule above guards a real edge)."""
    root = PACKAGE.parent
    imported = set()
    for tool in TOOLS:
        assert (root / tool / "__init__.py").exists(), tool
        for path in (root / tool).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            imported |= {dotted.split(".")[0] for _, dotted in imported_modules(root, path, tree)}
    assert "cskd_tf" in imported
