"""cskd_tf.registry.Registry on a synthetic package in tmp_path (no TensorFlow): registering,
reloads and clashes, lookups with "did you mean", families, discovery by import, and the
declarations read with ast before any import. The project's three registries are tested
where their things are (test_models, test_data, test_method_config, test_methods)."""

import subprocess
import sys
import textwrap

import pytest

from cskd_tf.errors import ConfigError, ModelError
from cskd_tf.registry import METHODS, MODELS, SOURCES, Registry

PLAIN = '''
from regpkg_owner import THINGS


@THINGS.register("alpha", display_name="Alpha", defaults={"size": 3}, rank=1)
class Alpha:
    pass


@THINGS.register("fam:")
def family(member):
    return member


@THINGS.register("epsilon", defaults=("size", "mode"))
class Epsilon:
    def __init__(self, size=2, flag=True, *, mode="fast"):
        pass
'''
COMPUTED = '''
from regpkg_owner import THINGS

NAME = "gamma"


@THINGS.register(NAME)  # not a literal: not declared, still registered on import
def gamma():
    pass


@THINGS.register("delta", defaults=dict(size=len("abc")))  # defaults not a literal
def delta():
    pass
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``regpkg`` with two modules registering into ``regpkg_owner.THINGS``."""
    (tmp_path / "regpkg").mkdir()
    (tmp_path / "regpkg" / "__init__.py").write_text("raise RuntimeError('heavy import')\n")
    (tmp_path / "regpkg" / "plain.py").write_text(PLAIN)
    (tmp_path / "regpkg" / "computed.py").write_text(COMPUTED)
    registry = Registry("thing", "regpkg", error=ModelError)
    owner = type(sys)("regpkg_owner")
    owner.THINGS = registry
    monkeypatch.setitem(sys.modules, "regpkg_owner", owner)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield registry
    for name in [m for m in sys.modules if m == "regpkg" or m.startswith("regpkg.")]:
        del sys.modules[name]


def test_declared_entries_are_read_without_importing(package):
    declared = package.declared()
    assert "regpkg" not in sys.modules  # its __init__ would raise
    assert sorted(declared) == ["alpha", "delta", "epsilon", "fam:"]
    assert declared["epsilon"].defaults == {"size": 2, "mode": "fast"}  # from the signature
    alpha = declared["alpha"]
    assert alpha.obj is None and alpha.module == "regpkg.plain"
    assert (alpha.display_name, alpha.defaults, alpha.meta) == ("Alpha", {"size": 3}, {"rank": 1})
    assert declared["delta"].defaults == {}  # what could not be read is left out
    assert package.names() == []
    assert package.names(declared=True) == ["alpha", "delta", "epsilon", "fam:"]
    assert package.check("fam:x").name == "fam:"
    with pytest.raises(ModelError, match="unknown thing 'alpah'; did you mean 'alpha'"):
        package.check("alpah")


def test_discover_imports_each_module_once_and_registers(package, tmp_path, monkeypatch):
    init = tmp_path / "regpkg" / "__init__.py"
    init.write_text("")
    package.discover()
    assert package.names() == ["alpha", "delta", "epsilon", "fam:", "gamma"]
    assert package.get("epsilon").defaults == package.declared()["epsilon"].defaults
    assert package.get("alpha").obj.__name__ == "Alpha"
    assert package.get("alpha").meta == {"rank": 1} and package.get("gamma").display_name == "gamma"
    assert package.get("delta").defaults == {"size": 3}
    # A second call imports nothing again; a module that appeared since is imported.
    (tmp_path / "regpkg" / "late.py").write_text(
        "from regpkg_owner import THINGS\nTHINGS.register('late')(print)\n")
    sys.modules["regpkg.plain"].marker = "kept"
    package.discover()
    assert "late" in package and sys.modules["regpkg.plain"].marker == "kept"


def test_lookups_families_and_messages(package):
    package.register("beta", display_name="Beta")(str)
    package.register("fam:")(repr)
    assert "beta" in package and "fam:thing" in package
    assert "fam:" not in package and "betaa" not in package and 3 not in package
    assert package.get("fam:thing").obj is repr and package["beta"] is str
    assert package.choices() == ["beta", "fam:<name>"]
    assert [e.name for e in package.entries()] == ["beta", "fam:"] == list(package)
    with pytest.raises(ModelError) as info:
        package.get("bet")
    assert str(info.value) == ("unknown thing 'bet'; did you mean 'beta'? set --config.thing to "
                               "one of: beta, fam:<name>")
    with pytest.raises(ModelError, match="^unknown thing 'zzz'; set --config.thing to one of"):
        package.get("zzz")


def test_a_reload_is_harmless_a_clash_is_an_error(package):
    def first():
        pass

    package.register("one", display_name="One")(first)
    package.register("one", display_name="One again")(first)  # same qualified object
    assert package.get("one").display_name == "One again"
    with pytest.raises(ModelError, match=r"^thing name 'one' is already registered by "
                                         r".*first; register .*<lambda> under another name$"):
        package.register("one")(lambda: None)
    with pytest.raises(ModelError, match="must be a non-empty string"):
        package.register(" one")(first)
    package.remove("one")
    assert "one" not in package
    with pytest.raises(ModelError, match="'two' declares defaults size that .*<lambda> has no "
                                         "keyword default"):
        package.register("two", defaults=("size", "other"))(lambda size, other=1: None)


def test_the_project_registries_are_typed_and_read_without_tensorflow():
    assert (METHODS.error, MODELS.error, SOURCES.error) == (ModelError, ModelError, ConfigError)
    code = textwrap.dedent("""
        import sys
        from cskd_tf.registry import METHODS, MODELS, SOURCES
        assert {"cskd", "ce", "kd"} <= set(METHODS.names(declared=True))
        assert "preact_resnet18" in MODELS.names(declared=True)
        assert "tfds:<name>" in SOURCES.choices(declared=True)
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
