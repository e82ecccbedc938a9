"""The plugin system: built-ins, external entry points, failures, duplicates, env switch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import fake_plugins

from qeval_plugins import QevalError
from qeval_plugins.core.registry import Registry

BUILTIN_QUANTIZERS = {
    *("none", "bnb-int8", "bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq", "rtn"),
    *("gptq-sim", "gptq", "prequantized"),
    *("torchao-int8", "torchao-int4", "torchao-w8a8", "torchao-fp8"),
    *("hqq", "quanto-int8", "quanto-int4", "quanto-int2", "quanto-fp8"),
    "autoround",
}


def test_builtins_register_through_the_public_hook():
    registry = Registry().load()
    assert set(registry.names()) >= BUILTIN_QUANTIZERS
    for name in ("baseline", "bnb", "rtn", "gptq_sim", "gptq", "prequantized"):
        info = registry.plugins[f"qeval.{name}"]
        assert info.source == "built-in" and info.error is None
    assert all(name.startswith("qeval.") for name in registry.plugins)
    assert registry.plugins["qeval.bnb"].quantizers == [
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


@pytest.mark.parametrize("name", ["rtn:bits=4:group_size=64", "NF4:double_quant=true"])
def test_a_spec_given_as_a_name_is_answered_with_its_model_args(name):
    """lm_eval's ``--model_args quantizer=rtn:bits=4`` is qeval run's spec where a name goes."""
    expected = {
        "rtn:bits=4:group_size=64": "quantizer=rtn,bits=4,group_size=64",
        "NF4:double_quant=true": "quantizer=NF4,double_quant=true",
    }[name]
    with pytest.raises(QevalError, match=rf"is a spec, not a name: .* write {expected} \("):
        Registry().load().get(name)


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


QUANTIZER = """
from qeval_plugins import Quantizer, hookimpl
class Q(Quantizer):
    name = "{name}"
    aliases = {aliases}
    description = "a quantizer for a test"
"""


def quantizer_source(*specs: tuple[str, tuple[str, ...]]) -> str:
    """A plugin module registering one quantizer per (name, aliases), in that order."""
    classes = "\n".join(
        QUANTIZER.replace("class Q(", f"class Q{i}(").format(name=name, aliases=aliases)
        for i, (name, aliases) in enumerate(specs)
    )
    calls = "".join(f"    register(Q{i}())\n" for i in range(len(specs)))
    return f"{classes}\n@hookimpl\ndef qeval_register_quantizers(register):\n{calls}"


def test_an_alias_a_builtin_has_is_dropped_and_the_quantizer_kept(monkeypatch, tmp_path):
    fake_plugins(
        monkeypatch, tmp_path, {"dupe": quantizer_source(("mine", ("nf4", "my-q")), ("fine-q", ()))}
    )
    registry = Registry().load()
    assert registry.get("nf4").quantizer.name == "bnb-nf4"  # the built-in keeps its alias
    assert registry.get("mine").plugin.name == "dupe"  # the quantizer itself still works
    assert registry.get("my-q").quantizer.name == "mine"  # and so do its other aliases
    assert set(registry.names()) == BUILTIN_QUANTIZERS | {"mine", "fine-q"}
    [problem] = registry.plugins["dupe"].problems
    expected = (
        r"quantizer 'mine' of plugin 'dupe'.*: alias 'nf4' dropped: it belongs to "
        r"quantizer 'bnb-nf4' of plugin 'qeval.bnb' \(built-in\)"
    )
    assert re.search(expected, problem)
    assert registry.plugins["dupe"].error is None


def test_a_builtin_name_disables_the_plugin_quantizer_that_takes_it(monkeypatch, tmp_path):
    fake_plugins(monkeypatch, tmp_path, {"extra": quantizer_source(("rtn", ()))})
    registry = Registry().load()
    assert registry.get("rtn").plugin.name == "qeval.rtn"
    [problem] = registry.plugins["extra"].problems
    assert (
        "is disabled: 'rtn' is already the name or an alias of quantizer 'rtn' of plugin "
        "'qeval.rtn' (built-in); built-in names cannot be taken"
    ) in problem
    assert "'rtn' is also claimed by" in " ".join(registry.plugins["qeval.rtn"].problems)


@pytest.mark.parametrize("names", [("alpha", "beta"), ("zeta", "beta")])
def test_two_plugins_claiming_one_name_or_alias_lose_it_whatever_their_order(
    monkeypatch, tmp_path, names
):
    """Entry points load in name order; the outcome must not depend on the plugins' names."""
    first, second = names
    fake_plugins(
        monkeypatch,
        tmp_path,
        {
            first: quantizer_source(("shared-q", ("s",)), (f"{first}-q", ("bitnet",))),
            second: quantizer_source(("shared-q", ()), (f"{second}-q", ("bitnet",))),
        },
    )
    registry = Registry().load()
    assert "shared-q" not in registry.names()  # both disabled
    assert {f"{first}-q", f"{second}-q"} <= set(registry.names())  # their others work
    for key in ("shared-q", "bitnet"):
        with pytest.raises(QevalError, match=f"'{key}' is claimed by both") as caught:
            registry.get(key)
        assert first in str(caught.value) and second in str(caught.value)
    with pytest.raises(QevalError):
        registry.get("s")  # the disabled quantizer's own alias goes with it


@pytest.mark.parametrize("names", [("alpha", "beta"), ("zeta", "beta")])
def test_a_name_beats_another_plugins_alias_whatever_their_order(monkeypatch, tmp_path, names):
    first, second = names
    fake_plugins(
        monkeypatch,
        tmp_path,
        {first: quantizer_source(("foo-q", ("bar-q",))), second: quantizer_source(("bar-q", ()))},
    )
    registry = Registry().load()
    assert registry.get("bar-q").plugin.name == second
    assert registry.get("foo-q").plugin.name == first
    assert "alias 'bar-q' dropped" in " ".join(registry.plugins[first].problems)


@pytest.mark.parametrize(
    ("modules", "listed"),
    [
        ({"extra": quantizer_source(("rtn", ()))}, "is disabled"),
        (
            {
                "beta": quantizer_source(("shared-q", ())),
                "alpha": quantizer_source(("shared-q", ("s",))),
            },
            "both are disabled",
        ),
        (  # inside one plugin: a later quantizer's alias is an earlier one's name
            {"solo": quantizer_source(("first-q", ()), ("second-q", ("first-q",)))},
            "alias 'first-q' dropped",
        ),
    ],
)
def test_clashes_keep_every_other_command_working(monkeypatch, tmp_path, capsys, modules, listed):
    from qeval_plugins.cli.main import main
    from qeval_plugins.core.plan import plan_quantization
    from qeval_plugins.core.registry import reset_registry

    fake_plugins(monkeypatch, tmp_path, modules)
    reset_registry()
    try:
        assert plan_quantization("none", {}, set(), "cpu").quantizer.name == "none"
        assert plan_quantization("rtn", {"bits": 3}, set(), "cpu").options["bits"] == 3
        monkeypatch.setenv("COLUMNS", "400")
        assert main(["plugins"]) == 0 and main(["quantizers"]) == 0
        listing = capsys.readouterr().out
        assert listed in listing
        assert all(f"plugin '{name}'" in listing for name in modules)
    finally:
        reset_registry()


def test_a_quantizer_instance_registered_twice_is_one_clash(monkeypatch, tmp_path):
    source = quantizer_source(("twice-q", ())) + "    register(Q0())\n"
    fake_plugins(monkeypatch, tmp_path, {"twice": source})
    registry = Registry().load()
    assert registry.get("twice-q").plugin.name == "twice"
    assert len(registry.plugins["twice"].problems) == 1


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("import", "import sys\nsys.exit(3)\n"),
        ("import", "raise BaseException('not even an Exception')\n"),
        (
            "register",
            "import sys\nfrom qeval_plugins import hookimpl\n"
            "@hookimpl\ndef qeval_register_quantizers(register):\n    sys.exit('bye')\n",
        ),
        (
            "register",
            "from qeval_plugins import QevalError, hookimpl\n@hookimpl\n"
            "def qeval_register_quantizers(register):\n    raise QevalError('plugin says no')\n",
        ),
    ],
)
def test_sys_exit_or_any_base_exception_is_a_load_error(monkeypatch, tmp_path, where, source):
    fake_plugins(monkeypatch, tmp_path, {"quitter": source, "good": quantizer_source(("ok-q", ()))})
    registry = Registry().load()
    error = registry.plugins["quitter"].error
    assert error.startswith(f"failed to {'load' if where == 'import' else 'register'}: ")
    assert re.search(r"SystemExit: (3|bye)|BaseException: not even|QevalError: plugin says", error)
    assert registry.get("ok-q").plugin.name == "good"


def test_keyboard_interrupt_while_loading_still_interrupts(monkeypatch, tmp_path):
    fake_plugins(monkeypatch, tmp_path, {"ctrlc": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        Registry().load()


MISSPELT = """
from qeval_plugins import Quantizer, hookimpl
class Q(Quantizer):
    name = "typo-q"
    description = "never registered: the hook name is misspelt"
@hookimpl
def qeval_register_quantizer(register):
    register(Q())
@hookimpl
def qeval_dequantize_weight(module):
    return "this plugin's other hooks must not stay registered"
"""

UNDECORATED = """
from qeval_plugins import Quantizer
class Q(Quantizer):
    name = "plain-q"
    description = "never registered: the hook lacks @hookimpl"
def qeval_register_quantizers(register):
    register(Q())
"""


def test_a_misspelt_hook_is_a_load_error_and_unloads_the_plugin(monkeypatch, tmp_path):
    fake_plugins(
        monkeypatch,
        tmp_path,
        {"typo": MISSPELT, "plain": UNDECORATED, "good": quantizer_source(("ok-q", ()))},
    )
    registry = Registry().load()
    error = registry.plugins["typo"].error
    assert "unknown hook 'qeval_register_quantizer'" in error
    assert "Did you mean 'qeval_register_quantizers'?" in error
    assert registry.manager.get_plugin("typo") is None  # unloaded: no hook of it is called
    assert all(
        impl.plugin_name != "typo"
        for impl in registry.manager.hook.qeval_dequantize_weight.get_hookimpls()
    )
    assert "'qeval_register_quantizers' is not decorated with @qeval_plugins.hookimpl" in (
        registry.plugins["plain"].error
    )
    assert registry.get("ok-q").plugin.name == "good"
    registry.manager.check_pending()  # nothing unknown is left registered


def test_an_entry_point_named_like_a_builtin_plugin_loads(monkeypatch, tmp_path, fresh_registry):
    """Built-ins live in qeval's namespace: an HQQ plugin published as entry point ``hqq`` before
    qeval had one loads next to the built-in ``qeval.hqq``; only its quantizer names could clash.
    """
    from qeval_plugins.cli.main import main

    fake_plugins(monkeypatch, tmp_path, {"hqq": quantizer_source(("hqq-ext", ("hqq4",)))})
    monkeypatch.setenv("QEVAL_PLUGINS", "hqq")  # selected by its entry-point name
    registry = Registry().load()
    assert registry.plugins["hqq"].error is None and registry.plugins["hqq"].problems == []
    assert registry.get("hqq-ext").plugin.name == "hqq"
    assert registry.get("hqq4").quantizer.name == "hqq-ext"
    assert registry.get("hqq").plugin.name == "qeval.hqq"
    assert registry.plugins["qeval.hqq"].source == "built-in"
    assert not registry.troubled()
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["plugins"]) == 0


def test_the_builtin_namespace_is_reserved(monkeypatch, tmp_path):
    modules = {
        "qeval.hqq": quantizer_source(("x-q", ())),
        "qeval.mine": quantizer_source(("y-q", ())),
    }
    fake_plugins(monkeypatch, tmp_path, modules)
    registry = Registry().load()
    assert registry.plugins["qeval.hqq"].source == "built-in"
    assert registry.get("hqq").plugin.name == "qeval.hqq"
    for key in ("qeval.hqq#2", "qeval.mine"):
        assert registry.plugins[key].error == (
            "names starting with 'qeval.' are reserved for qeval's built-in plugins; rename the "
            "entry point"
        )
    assert "x-q" not in registry.names() and "y-q" not in registry.names()


@pytest.mark.parametrize(
    ("attributes", "rule"),
    [
        ('name = ""', r"name '' breaks the naming rule"),
        ('name = "MyQuant"', r"name 'MyQuant' breaks the naming rule \(lower case"),
        ('name = "my quant"', r"name 'my quant' breaks the naming rule"),
        ('name = "a,b"', r"name 'a,b' breaks"),
        ('name = "rtn:4"', r"name 'rtn:4' breaks"),
        ('name = "k=v"', r"name 'k=v' breaks"),
        ('name = "bad\\x1b[2J"', r"name 'bad\\x1b\[2J' breaks"),
        ('aliases = ("Good",)', r"alias 'Good' breaks the naming rule"),
        ('aliases = ("x y",)', r"alias 'x y' breaks"),
        ('aliases = "one"', r"aliases must be a tuple of names, got 'one'"),
        ('aliases = ("bad-q",)', r"alias 'bad-q' repeats its name or another alias"),
        ('description = ""', r"description must be a non-empty string"),
        ('description = "two\\nlines"', r"description must be one line of printable"),
        ('options = (Option("Bits", int, 4, "b"),)', r"option name 'Bits' breaks the naming"),
        ('options = (Option("a:b", int, 4, "b"),)', r"option name 'a:b' breaks"),
        ('options = (Option("bits", int, 4, ""),)', r"option 'bits': help must be a non-empty"),
        ('options = (Option("bits", int, 9, "b", maximum=8),)', r"default 9 breaks its own"),
        ('options = (Option("bits", int, 1, "b", minimum=2),)', r"it must be >= 2"),
        ('options = (Option("m", str, "c", "m", ("a", "b")),)', r"must be one of a, b"),
        ('options = (Option("bits", int, 4.5, "b"),)', r"default 4.5 is not an integer"),
        ('options = (Option("bits", int, "4", "b"),)', r"default '4' is not an integer"),
        ('options = (Option("on", bool, 1, "b"),)', r"default 1 is not true or false"),
        ('options = (Option("x", float, float("nan"), "x"),)', r"must be a finite number"),
        ('options = (Option("x", float, 1.0, "x", maximum=float("inf")),)', r"finite numbers"),
        ('options = (Option("x", float, 1.0, "x", minimum=2.0, maximum=1.0),)', r"is above"),
        ('options = (Option("x", str, "a", "x", minimum=0),)', r"apply to int and float"),
        ('options = (Option("x", list, [], "x"),)', r"type must be int, float, bool or str"),
        ('options = (Option("x", int, 1, "x", choices=()),)', r"choices must be a non-empty"),
        ('options = (Option("x", int, 1, "x", choices=(1, "2")),)', r"choice '2' is not an int"),
        ('options = (Option("x", int, 1, "x"), Option("x", int, 2, "y"))', r"declared twice"),
        ('options = (Option("quantizer", str, "a", "x"),)', r"'quantizer' is reserved"),
        ('options = ({"name": "bits"},)', r"options must be qeval_plugins.Option objects"),
        ('requires = "hqq"', r"requires must be a tuple of module names"),
        ('extra = "my extra"', r"extra must be None or a pip extra name"),
        ("identity = 1", r"identity must be True or False"),
        ("cuda_capability = (8, 9)", r"cuda_capability is set, so needs_cuda must be True"),
        ("needs_cuda = True; cuda_capability = 89", r"cuda_capability must be \(major, minor\)"),
    ],
)
def test_declarations_are_validated_at_registration(monkeypatch, tmp_path, attributes, rule):
    source = f"""
from qeval_plugins import Option, Quantizer, hookimpl
class Bad(Quantizer):
    name = "bad-q"
    description = "breaks one rule"
    {attributes}
class Good(Quantizer):
    name = "good-q"
    description = "keeps every rule"
@hookimpl
def qeval_register_quantizers(register):
    register(Bad())
    register(Good())
"""
    fake_plugins(monkeypatch, tmp_path, {"author": source})
    registry = Registry().load()
    info = registry.plugins["author"]
    assert info.error is None and info.quantizers == ["good-q"]
    [problem] = info.problems
    assert "of plugin 'author' (unknown) is disabled: " in problem
    assert re.search(rule, problem), problem
    assert "\n" not in problem and "\x1b" not in problem
    name = ast.literal_eval(attributes.partition("= ")[2]) if attributes[:5] == "name " else "bad-q"
    with pytest.raises(QevalError, match=r"^quantizer .* of plugin 'author' \(unknown\) is disab"):
        registry.get(name)


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


def test_a_plugin_name_in_qeval_plugins_that_is_not_installed_is_a_warning(
    monkeypatch, tmp_path, caplog
):
    fake_plugins(monkeypatch, tmp_path, {"alpha": quantizer_source(("alpha-q", ()))})
    monkeypatch.setenv("QEVAL_PLUGINS", "alpah,none")
    assert "alpha-q" not in Registry().load().names()
    warned = [r.getMessage() for r in caplog.records if "QEVAL_PLUGINS" in r.getMessage()]
    assert warned == [
        "QEVAL_PLUGINS names 'alpah', which no installed qeval plugin has. Did you mean 'alpha'?"
    ]
    for selected in ("rtn", "qeval.rtn"):
        caplog.clear()
        monkeypatch.setenv("QEVAL_PLUGINS", selected)
        assert "rtn" in Registry().load().names()
        [message] = [r.getMessage() for r in caplog.records if "QEVAL_PLUGINS" in r.getMessage()]
        assert f"'{selected}', the built-in plugin 'qeval.rtn': built-ins always load" in message


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
        "from qeval_plugins.cli.main import main\n"
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


@pytest.mark.parametrize(("driver", "expected"), [(False, "needs CUDA sm89+"), (True, "ok")])
def test_a_cuda_only_quantizer_is_listed_without_importing_torch(monkeypatch, driver, expected):
    """With torch not yet imported, a listing asks the system for an NVIDIA driver instead."""
    import os
    import shutil

    from qeval_plugins.core import plan

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(os.path, "exists", lambda path: driver and "nvidia" in str(path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    entry = Registry().load().get("torchao-fp8")
    assert plan.availability(entry.quantizer) == expected
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    ("gpu", "expected"), [((8, 0), "needs CUDA sm89+ (GPU 0 is sm80)"), ((9, 0), "ok")]
)
def test_a_gpu_below_the_quantizers_compute_capability_is_named(monkeypatch, gpu, expected):
    """With torch loaded and a GPU present, the listing compares GPU 0 with the quantizer's
    ``cuda_capability`` (torchao-fp8: 8.9)."""
    import types

    from qeval_plugins.core import plan

    cuda = types.SimpleNamespace(is_available=lambda: True, get_device_capability=lambda i: gpu)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(plan, "_no_nvidia_driver", lambda: False)
    entry = Registry().load().get("torchao-fp8")
    assert plan.availability(entry.quantizer) == expected


def test_qeval_quantizers_shows_option_help(monkeypatch, capsys, fresh_registry):
    from qeval_plugins.cli.main import main

    monkeypatch.setenv("COLUMNS", "400")
    assert main(["quantizers", "--options"]) == 0
    listing = capsys.readouterr().out
    assert "bits: int = 4 (2..8) — bits per weight for format=int" in listing
    assert "threshold: float = 6.0 (0..) — outlier threshold" in listing


def test_load_errors_are_one_printable_line(monkeypatch, tmp_path, capsys):
    from qeval_plugins.cli.main import main
    from qeval_plugins.core.registry import reset_registry

    fake_plugins(
        monkeypatch, tmp_path, {"noisy": "raise RuntimeError('\\x1b[2J[red]boom\\nsecond line')\n"}
    )
    registry = Registry().load()
    error = registry.plugins["noisy"].error
    assert error == r"failed to load: RuntimeError: \x1b[2J[red]boom second line"
    reset_registry()
    try:
        monkeypatch.setenv("COLUMNS", "400")
        assert main(["plugins"]) == 0
        listing = capsys.readouterr().out
        assert "\x1b" not in listing and "[red]boom" in listing  # markup shown, not obeyed
    finally:
        reset_registry()
