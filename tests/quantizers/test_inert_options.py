"""Every built-in quantizer refuses an option given explicitly that has no effect in its
combination, naming the option that enables it; a value the combination sets anyway is fine."""

from __future__ import annotations

import pytest

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.kv_settings import take_kv_cache
from qeval_plugins.core.plan import check_spec, plan_quantization

FORMAT_CASES = [  # rtn and gptq-sim share the format options
    ({"format": "fp8_e4m3", "bits": 4}, "bits=4 has no effect with format=fp8_e4m3", "format=int"),
    ({"format": "nf4", "bits": 3}, "bits=3 has no effect with format=nf4", "format=int"),
    ({"format": "mxfp4", "group_size": 128}, "group_size=128 has no effect", "format=int, "),
    ({"format": "mxint8", "group_size": 0}, "group_size=0 has no effect", "format=int, "),
    ({"format": "fp4_e2m1", "symmetric": False}, "symmetric=false has no effect", "format=int"),
]
ACT_CASES = [  # the activation options of rtn and gptq-sim
    ({"bits": 8, "act_bits": 8}, "act_bits=8 has no effect with act_format=none", "act_format=int"),
    ({"act_granularity": "token"}, "act_granularity=token has no effect", "act_format=int, "),
    ({"act_granularity": "tensor"}, "act_granularity=tensor has no effect", "act_format=int, "),
    ({"smooth": 0.5}, "smooth=0.5 has no effect with act_format=none", "act_format other than"),
    ({"act_format": "fp8_e5m2", "act_bits": 4}, "act_bits=4 has no effect", "act_format=int"),
    (
        {"act_format": "mxfp4", "act_granularity": "token"},
        "act_granularity=token has no effect with act_format=mxfp4",
        "act_format=int, ",
    ),
]
CASES = [
    *[("rtn", *case) for case in FORMAT_CASES + ACT_CASES],
    *[("gptq-sim", *case) for case in FORMAT_CASES + ACT_CASES],
    (
        "rtn",
        {"calibration_samples": 16},
        "calibration_samples=16 has no effect with act_granularity=token and smooth=0",
        "act_granularity=tensor or smooth other than 0",
    ),
    (
        "rtn",
        {"act_format": "int", "calibration_seqlen": 64},
        "calibration_seqlen=64 has no effect",
        "act_granularity=tensor",
    ),
    (
        "quanto-int8",
        {"calibration_file": "bundled"},
        "calibration_file=bundled has no effect with activations=none",
        "activations=int8",
    ),
    (
        "gptq",
        {"desc_act": True, "act_group_aware": True},
        "act_group_aware=true has no effect with desc_act=true (which sets act_group_aware=false)",
        "desc_act=false",
    ),
]


@pytest.mark.parametrize(("name", "options", "message", "enabler"), CASES)
def test_an_option_without_effect_is_one_line_naming_what_enables_it(
    name, options, message, enabler
):
    with pytest.raises(QevalError) as caught:
        plan_quantization(name, dict(options), set(), "cpu")
    text = str(caught.value)
    assert text.startswith(f"quantizer '{name}': {message}"), text
    assert f"takes effect only with {enabler}" in text and "\n" not in text


@pytest.mark.parametrize(
    ("name", "options", "final"),
    [
        ("rtn", {"format": "fp8_e4m3", "bits": 8}, {"bits": 8}),
        ("rtn", {"format": "mxfp6", "group_size": 32}, {"bits": 6, "group_size": 32}),
        ("rtn", {"format": "nf4", "symmetric": True}, {"bits": 4}),
        ("rtn", {"act_format": "fp8_e4m3", "act_bits": 8}, {"act_bits": 8}),
        ("rtn", {"act_format": "mxfp4", "act_granularity": "mx"}, {"act_granularity": "mx"}),
        ("rtn", {"act_format": "int", "act_bits": 6}, {"act_bits": 6}),
        ("rtn", {"act_format": "int", "smooth": 0.5, "calibration_samples": 4}, {"smooth": 0.5}),
        ("rtn", {"act_format": "int", "act_granularity": "tensor", "calibration_seed": 3}, {}),
        ("gptq-sim", {"calibration_samples": 4}, {"calibration_samples": 4}),
        ("quanto-int8", {"activations": "int8", "calibration_samples": 4}, {}),
        ("gptq", {"desc_act": True, "act_group_aware": False}, {"act_group_aware": False}),
    ],
)
def test_options_with_an_effect_or_the_value_the_combination_sets_are_taken(name, options, final):
    try:
        plan = plan_quantization(name, dict(options), set(), "cpu")
    except QevalError as error:  # gptq's and quanto's packages may be missing here
        assert "has no effect" not in str(error), error
        return
    assert all(plan.options[key] == value for key, value in final.items())
    assert plan.given == options  # recorded as given


def test_defaults_never_count_as_given():
    plan = plan_quantization("rtn", {"format": "mxfp4"}, set(), "cpu")
    assert plan.options["group_size"] == 32 and plan.given == {"format": "mxfp4"}
    assert plan_quantization("rtn", {"act_format": "fp8_e4m3"}, set(), "cpu").options["act_bits"]


def test_quanto_builds_calibration_windows_only_for_int8_activations():
    for activations, needed in (("none", False), ("int8", True)):
        try:
            plan = plan_quantization("quanto-int8", {"activations": activations}, set(), "cpu")
        except QevalError:
            pytest.skip("optimum-quanto is not installed")
        assert plan.quantizer.needs_calibration(plan.options) is needed


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        (
            {"kv_format": "mxfp4", "kv_group_size": 64},
            "kv_group_size=64 has no effect with kv_format=mxfp4 (which sets kv_group_size=32)",
        ),
        (
            {"kv_format": "mxfp4", "kv_bits": 8},
            "kv_bits=8 has no effect with kv_format=mxfp4 (which sets kv_bits=4)",
        ),
        (
            {"kv_backend": "quanto", "kv_format": "fp8_e4m3"},
            "kv_format=fp8_e4m3 has no effect with kv_backend=quanto",
        ),
    ],
)
def test_kv_settings_without_effect_are_refused(model_args, message):
    with pytest.raises(QevalError) as caught:
        take_kv_cache(dict(model_args))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_kv_bits_at_the_formats_own_width_is_taken_as_rtn_bits_is():
    """kv_format=mxfp4:kv_bits=4 was refused while rtn's format=mxfp4:bits=4 is taken."""
    assert take_kv_cache({"kv_format": "mxfp4", "kv_bits": 4}).format == "mxfp4"
    assert take_kv_cache({"kv_format": "fp8_e4m3", "kv_bits": 8}).format == "fp8_e4m3"
    plan_quantization("rtn", {"format": "mxfp4", "bits": 4}, set(), "cpu")


def test_an_mx_kv_format_means_blocks_of_32():
    assert take_kv_cache({"kv_format": "mxfp4"}).group_size == 32
    assert take_kv_cache({"kv_format": "mxfp4", "kv_group_size": 32}).describe() == (
        "mxfp4 g32 r128 (sim)"
    )
    assert take_kv_cache({"kv_format": "fp8_e4m3", "kv_group_size": 16}).group_size == 16


def test_an_mx_kv_cache_fits_any_head_dimension_of_32_or_more():
    from qeval_plugins.core.kv_settings import check_head_dim

    mx = take_kv_cache({"kv_format": "mxfp8"})
    for head_dim in (32, 64, 80, 128):  # 80: the last block is padded, as for weights
        check_head_dim(mx, head_dim)
    with pytest.raises(QevalError, match=r"^kv_format=mxfp8 quantizes blocks of 32 values, more"):
        check_head_dim(mx, 16)
    with pytest.raises(QevalError, match=r"kv_group_size=64 does not divide .* dimension 80"):
        check_head_dim(take_kv_cache({"kv_bits": 4}), 80)


def test_a_spec_is_refused_the_same_way():
    with pytest.raises(QevalError, match=r"act_bits=8 has no effect with act_format=none"):
        check_spec("rtn:bits=8:act_bits=8", "cpu")
    with pytest.raises(QevalError, match=r"kv_group_size=128 has no effect"):
        check_spec("rtn:kv_format=mxfp8:kv_group_size=128", "cpu")


def test_qeval_run_refuses_the_spec_before_any_run(tmp_path, capsys):
    from qeval_plugins.cli.main import main

    output = tmp_path / "runs"
    argv = ["run", "--model", "qeval-tiny", "--quantizers", "none,rtn:bits=8:act_bits=8"]
    code = main([*argv, "--tasks", "qeval_sqnr", "--output", str(output), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("qeval: error: ")
    assert "act_bits=8 has no effect with act_format=none" in err and "act_format=int" in err
    assert not any(output.rglob("results*.json"))  # not even the 'none' run started


def test_an_mx_kv_cache_generates():
    """Before, an MX kv_format kept kv_group_size=64 and failed at the first generation."""
    import torch

    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", quantizer="none", device="cpu", kv_format="mxfp4")
    ids = torch.tensor([lm.tok_encode("The capital of France is")])
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 8)
    assert lm.get_model_info()["qeval"]["kv_cache"]["describe"] == "mxfp4 g32 r128 (sim)"
