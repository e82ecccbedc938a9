"""Option validation and the plan that turns model_args into a quantizer + options."""

from __future__ import annotations

import pytest

from qeval_plugins import Option, QevalError, Quantizer, Requires
from qeval_plugins.core.options import resolve_options
from qeval_plugins.core.plan import plan_quantization

BITS = Option("bits", int, 4, "bits", minimum=2, maximum=8)
SCALE = Option("scale", float, 1.0, "scale", minimum=0.0)
FLAG = Option("flag", bool, False, "flag")
MODE = Option("mode", str, "a", "mode", choices=("a", "b"))


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        (BITS, 3, 3),
        (BITS, "5", 5),
        (BITS, 6.0, 6),
        (SCALE, 2, 2.0),
        (SCALE, "0.5", 0.5),
        (FLAG, True, True),
        (FLAG, "false", False),
        (FLAG, "yes", True),
        (MODE, "b", "b"),
    ],
)
def test_values_are_coerced_to_the_declared_type(option, given, expected):
    value = option.coerce(given, "q")
    assert value == expected and type(value) is option.type


@pytest.mark.parametrize(
    ("option", "given", "message"),
    [
        (BITS, "four", r"option 'bits' of quantizer 'q' must be an integer, got 'four'"),
        (BITS, 9, r"must be <= 8, got 9"),
        (BITS, 1, r"must be >= 2, got 1"),
        (BITS, True, r"must be an integer"),
        (SCALE, -1.0, r"must be >= 0"),
        (FLAG, "maybe", r"must be true or false"),
        (MODE, "c", r"must be one of a, b, got 'c'"),
    ],
)
def test_bad_values_are_one_clear_line(option, given, message):
    with pytest.raises(QevalError, match=message) as caught:
        option.coerce(given, "q")
    assert "\n" not in str(caught.value)


def test_defaults_fill_in_and_unknown_names_list_valid_ones():
    assert resolve_options("q", (BITS, FLAG), {"flag": "true"}) == {"bits": 4, "flag": True}
    with pytest.raises(QevalError, match=r"has no option 'bitz'. Did you mean 'bits'.*bits, flag"):
        resolve_options("q", (BITS, FLAG), {"bitz": 3})


def test_plan_takes_quantizer_options_out_of_model_args():
    model_args = {"bits": 3, "group_size": 0, "attn_implementation": "eager"}
    plan = plan_quantization("rtn", model_args, {"dtype"}, "cpu")
    assert plan.options["bits"] == 3 and plan.options["group_size"] == 0
    assert model_args == {"attn_implementation": "eager"}  # hf model_args pass through


def test_plan_keeps_options_that_hflm_also_takes():
    model_args = {"dtype": "float16"}
    plan = plan_quantization(None, model_args, {"dtype"}, "cpu")  # lm-eval parses "none" as None
    assert plan.quantizer.name == "none" and model_args == {"dtype": "float16"}


def test_option_of_another_quantizer_is_named():
    owners = "quantizers rtn, gptq-sim, gptq and autoround"
    with pytest.raises(QevalError, match=rf"option 'bits' belongs to {owners}, not 'bnb-nf4'"):
        plan_quantization("bnb-nf4", {"bits": 4}, set(), "cpu")


def test_option_errors_happen_before_loading():
    with pytest.raises(QevalError, match=r"option 'bits' of quantizer 'rtn' must be <= 8"):
        plan_quantization("rtn", {"bits": 12}, set(), "cpu")
    with pytest.raises(QevalError, match=r"bits=8 has no effect with format=mxfp4 \(which sets"):
        plan_quantization("rtn", {"format": "mxfp4", "bits": 8}, set(), "cpu")


def test_mx_formats_imply_blocks_of_32_and_fixed_bits():
    plan = plan_quantization("rtn", {"format": "mxfp6"}, set(), "cpu")
    assert plan.options["group_size"] == 32 and plan.options["bits"] == 6


def test_hf_quantization_switches_are_redirected_to_quantizers():
    with pytest.raises(QevalError, match=r"'load_in_4bit' is lm-eval's own quantization switch"):
        plan_quantization("none", {"load_in_4bit": True}, set(), "cpu")


class _NeedsPackage(Quantizer):
    name = "needs-pkg"
    description = "needs a package that is not installed"
    requires = ("qeval_no_such_module_xyz",)
    extra = "fancy"


class _NeedsCuda(Quantizer):
    name = "needs-cuda"
    description = "cuda only"
    needs_cuda = True


@pytest.fixture
def extra_quantizers(monkeypatch, fresh_registry):
    from qeval_plugins.core.registry import PluginInfo, get_registry

    registry = get_registry()
    info = PluginInfo("fancy", "qeval-fancy", "0")
    assert registry.add_quantizer(_NeedsPackage(), info)
    assert registry.add_quantizer(_NeedsCuda(), info)
    return registry


def test_missing_package_names_the_plugins_own_distribution_and_extra(extra_quantizers):
    """A third-party plugin's extra is an extra of its own distribution, not of qeval."""
    from qeval_plugins.core.plan import availability

    hint = "pip install 'qeval-fancy[fancy]'"
    with pytest.raises(QevalError, match=r"needs the package 'qeval_no_such_module_xyz'.*") as e:
        plan_quantization("needs-pkg", {}, set(), "cpu")
    assert str(e.value).endswith(f"run: {hint}")
    assert availability(extra_quantizers.get("needs-pkg").quantizer).endswith(hint)


def test_a_builtin_extra_names_qeval(monkeypatch, fresh_registry):
    from qeval_plugins.core.plan import install_command
    from qeval_plugins.core.registry import get_registry

    rtn = get_registry().get("rtn").quantizer
    monkeypatch.setattr(type(rtn), "extra", "rtn")
    assert install_command(rtn, "torch") == "pip install 'qeval[rtn]'"
    monkeypatch.setattr(type(rtn), "extra", None)
    assert install_command(rtn, "torch") == "pip install torch"


def test_cuda_only_quantizer_on_a_cpu_machine(extra_quantizers):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(QevalError, match=r"'needs-cuda' needs a CUDA GPU and none is available"):
        plan_quantization("needs-cuda", {}, set(), "cpu")


@pytest.mark.parametrize(
    ("option", "given", "message"),
    [
        (SCALE, "nan", r"must be a finite number, got 'nan'"),
        (SCALE, float("inf"), r"must be a finite number, got inf"),
        (SCALE, "1e400", r"must be a finite number"),
        (SCALE, 10**400, r"must be a number"),
        (BITS, "²", r"must be an integer, got '²'"),
        (BITS, "٣", r"must be an integer"),
        (BITS, "9" * 5000, r"must be an integer"),
    ],
)
def test_values_that_are_not_json_safe_numbers_are_refused(option, given, message):
    """NaN and infinities are not JSON; odd digits must not become a traceback."""
    with pytest.raises(QevalError, match=message):
        option.coerce(given, "q")


def test_nan_threshold_is_refused_before_loading():
    with pytest.raises(QevalError, match=r"'threshold' of quantizer 'bnb-int8' must be a finite"):
        plan_quantization("bnb-int8", {"threshold": "nan"}, set(), "cpu")


def test_defaults_are_recorded_in_the_declared_type():
    assert resolve_options("q", (Option("scale", float, 1, "s"),), {}) == {"scale": 1.0}
    assert type(resolve_options("q", (Option("scale", float, 1, "s"),), {})["scale"]) is float


def test_builtin_declarations_keep_every_rule():
    from qeval_plugins.core.quantizer import contract_problems
    from qeval_plugins.core.registry import Registry

    registry = Registry().load()
    assert all(not info.problems and info.error is None for info in registry.plugins.values())
    assert all(contract_problems(entry.quantizer) == [] for entry in registry.all())


def test_frozen_options_refuse_every_change_and_copy_freely():
    import copy
    import pickle

    from qeval_plugins.core.options import FrozenOptions, OptionsChanged

    options = FrozenOptions({"bits": 4, "format": "int"})
    for change in (
        lambda o: o.__setitem__("bits", 3),
        lambda o: o.__delitem__("bits"),
        lambda o: o.update(bits=3),
        lambda o: o.pop("bits"),
        lambda o: o.popitem(),
        lambda o: o.setdefault("x", 1),
        lambda o: o.clear(),
        lambda o: o.__ior__({"bits": 3}),
    ):
        with pytest.raises(OptionsChanged):
            change(options)
    assert options == {"bits": 4, "format": "int"}
    for mutable in (dict(options), copy.copy(options), copy.deepcopy(options), options.copy()):
        mutable["bits"] = 2
        assert type(mutable) is dict and options["bits"] == 4
    assert pickle.loads(pickle.dumps(options)) == {"bits": 4, "format": "int"}


MODE_DEPENDENT = (
    MODE,
    Option(
        "depth",
        int,
        2,
        "depth",
        minimum=1,
        requires=(Requires("mode", ("b",), implies=(("a", 5),)),),
    ),
    Option("tint", str, "red", "tint", requires=(Requires("mode", ("a",), other_than=True),)),
    Option(
        "gain",
        float,
        0.0,
        "gain",
        requires=(Requires("mode", ("b",)), Requires("flag", (True,))),
    ),
    FLAG,
)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"depth": 2},
            "depth=2 has no effect with mode=a (which sets depth=5); it takes effect "
            "only with mode=b: give that, or drop depth.",
        ),
        (
            {"tint": "red"},
            "tint=red has no effect with mode=a; it takes effect only with mode "
            "other than a: give that, or drop tint.",
        ),
        (
            {"gain": 0.5},
            "gain=0.5 has no effect with mode=a and flag=false; it takes effect only "
            "with mode=b or flag=true: give that, or drop gain.",
        ),
        ({"mode": "a", "gain": 0}, "gain=0 has no effect with mode=a and flag=false"),
    ],
)
def test_an_explicit_option_without_effect_names_what_enables_it(given, message):
    with pytest.raises(QevalError) as caught:
        resolve_options("q", MODE_DEPENDENT, given)
    assert str(caught.value).startswith(f"quantizer 'q': {message}")


@pytest.mark.parametrize(
    "given",
    [
        {},  # defaults never have to have an effect
        {"mode": "b", "depth": 3, "tint": "blue", "gain": 1.0},
        {"depth": 5},  # the value mode=a sets anyway
        {"flag": True, "gain": 0.5},  # one requirement of several is enough
        {"flag": "yes", "gain": "0.5"},  # checked on the converted values
    ],
)
def test_options_with_an_effect_or_their_implied_value_are_taken(given):
    resolved = resolve_options("q", MODE_DEPENDENT, given)
    assert set(resolved) == {"mode", "depth", "tint", "gain", "flag"}


def test_a_requirement_is_checked_at_registration():
    from qeval_plugins.core.quantizer import contract_problems

    class Declares(Quantizer):
        name = "declares"
        description = "declares broken requirements"
        options = (
            MODE,
            Option("a1", int, 1, "a", requires=(Requires("nope", (1,)),)),
            Option("a2", int, 1, "a", requires=(Requires("mode", ("c",)),)),
            Option("a3", int, 1, "a", requires=(Requires("mode", ("a",), implies=(("a", 2),)),)),
            Option("a4", int, 1, "a", requires=(Requires("mode", ("a",), implies=(("b", "x"),)),)),
            Option("a5", int, 1, "a", requires=(Requires("a5", (1,)),)),
            Option("a6", int, 1, "a", requires=("mode",)),
            Option("a7", int, 1, "a", requires=(Requires("mode", ()),)),
        )

    assert contract_problems(Declares()) == [
        "option 'a6': requires must be a tuple of qeval_plugins.Requires",
        "option 'a1': requires 'nope', which is not another option of this quantizer",
        "option 'a2': requires 'mode': 'c' is not a valid value",
        "option 'a3': requires 'mode': implies 'a', not a value outside the requirement",
        "option 'a4': requires 'mode': implied value 'x' is not a valid value",
        "option 'a5': requires 'a5', which is not another option of this quantizer",
        "option 'a7': requires 'mode': values must be a non-empty tuple",
    ]
