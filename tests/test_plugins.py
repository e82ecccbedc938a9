"""The plugin system: built-ins, external entry points, failures, duplicates, env switch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from qeval_plugins import QevalError
from qeval_plugins import plugins as plugins_module
from qeval_plugins.plugins import Registry

BUILTIN_QUANTIZERS = {"none", "bnb-int8", "bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq", "rtn"}


def fake_plugins(monkeypatch, tmp_path, modules: dict[str, str]) -> None:
    """Make ``modules`` (entry-point name -> module source) the only external plugins."""
    for name, source in modules.items():
        (tmp_path / f"fakeplugin_{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        metadata.EntryPoint(name=name, value=f"fakeplugin_{name}", group="qeval")
        for name in modules
    ]
    monkeypatch.setattr(plugins_module.metadata, "entry_points", lambda group: points)


def test_builtins_register_through_the_public_hook():
    registry = Registry().load()
    assert set(registry.names()) >= BUILTIN_QUANTIZERS
    for name in ("baseline", "bnb", "rtn"):
        info = registry.plugins[name]
        assert info.source == "built-in" and info.error is None
    assert registry.plugins["bnb"].quantizers == [
        "bnb-int8",
        "bnb-nf4",
        "bnb-fp4",
        "bnb-nf4-dq",
        "bnb-fp4-dq",
    ]


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("nf4", "bnb-nf4"),
        ("fp4", "bnb-fp4"),
        ("int8", "bnb-int8"),
        ("nf4-dq", "bnb-nf4-dq"),
        ("fp4-dq", "bnb-fp4-dq"),
        ("NF4", "bnb-nf4"),
        ("baseline", "none"),
    ],
)
def test_literature_names_are_aliases(alias, name):
    assert Registry().load().get(alias).quantizer.name == name


def test_unknown_quantizer_suggests_the_closest_name():
    with pytest.raises(QevalError, match=r"unknown quantizer 'bnb-nf5'\. Did you mean 'bnb-nf4'"):
        Registry().load().get("bnb-nf5")


def test_external_plugin_loads_and_a_broken_one_is_reported(monkeypatch, tmp_path):
    fake_plugins(
        monkeypatch,
        tmp_path,
        {
            "good": """
            from qeval_plugins import Quantizer, hookimpl
            class Good(Quantizer):
                name = "good-q"
                description = "a fine quantizer"
            @hookimpl
            def qeval_register_quantizers(register):
                register(Good())
        """,
            "broken": "raise RuntimeError('boom at import')\n",
            "badregister": """
            from qeval_plugins import hookimpl
            @hookimpl
            def qeval_register_quantizers(register):
                raise ValueError('boom at register')
        """,
        },
    )
    registry = Registry().load()
    assert registry.get("good-q").plugin.name == "good"
    assert "RuntimeError: boom at import" in registry.plugins["broken"].error
    assert "ValueError: boom at register" in registry.plugins["badregister"].error
    assert set(registry.names()) >= BUILTIN_QUANTIZERS | {"good-q"}


def test_duplicate_names_name_both_plugins(monkeypatch, tmp_path):
    fake_plugins(
        monkeypatch,
        tmp_path,
        {
            "dupe": """
            from qeval_plugins import Quantizer, hookimpl
            class Dupe(Quantizer):
                name = "mine"
                aliases = ("nf4",)
                description = "takes a name that bnb owns"
            @hookimpl
            def qeval_register_quantizers(register):
                register(Dupe())
        """,
        },
    )
    both = r"'nf4' is registered by both plugin 'bnb'.*plugin 'dupe'"
    with pytest.raises(QevalError, match=both):
        Registry().load()


def test_env_switch_restricts_external_plugins(monkeypatch, tmp_path):
    source = """
        from qeval_plugins import Quantizer, hookimpl
        class Q(Quantizer):
            name = "{name}-q"
            description = "x"
        @hookimpl
        def qeval_register_quantizers(register):
            register(Q())
    """
    fake_plugins(monkeypatch, tmp_path, {n: source.format(name=n) for n in ("alpha", "beta")})
    monkeypatch.setenv("QEVAL_PLUGINS", "beta")
    assert "alpha-q" not in Registry().load().names()
    assert "beta-q" in Registry().load().names()
    monkeypatch.setenv("QEVAL_PLUGINS", "none")
    assert set(Registry().load().names()) == BUILTIN_QUANTIZERS
    monkeypatch.delenv("QEVAL_PLUGINS")
    assert {"alpha-q", "beta-q"} <= set(Registry().load().names())


def test_registering_something_that_is_not_a_quantizer_is_reported(monkeypatch, tmp_path):
    fake_plugins(
        monkeypatch,
        tmp_path,
        {
            "wrong": """
            from qeval_plugins import hookimpl
            @hookimpl
            def qeval_register_quantizers(register):
                register("not a quantizer")
        """,
        },
    )
    registry = Registry().load()
    assert "needs a qeval_plugins.Quantizer instance" in registry.plugins["wrong"].error


def test_listing_plugins_imports_no_heavy_dependency():
    code = (
        "import sys, io, contextlib\n"
        "from qeval_plugins.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins']); main(['quantizers'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'gptqmodel', 'lm_eval')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
