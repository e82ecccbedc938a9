"""A checkpoint saved already quantized (here: bitsandbytes NF4) is evaluated with
``quantizer=prequantized``: detected, recorded with its method and format, never an unquantized
baseline, refused by quantizers that would quantize it a second time (and by ``none``), and
compared with its base model through ``reference=``."""

from __future__ import annotations

import json
import shutil

import pytest

from qeval_plugins.core.errors import QevalError


@pytest.fixture(scope="module")
def nf4_checkpoint(tiny_model_dir, tmp_path_factory):
    """The tiny model quantized to NF4 by transformers + bitsandbytes and saved with its config."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    target = tmp_path_factory.mktemp("prequantized") / "tiny-nf4"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), quantization_config=config)
    model.save_pretrained(str(target))
    for file in tiny_model_dir.glob("tokenizer*"):
        shutil.copy(file, target / file.name)
    return target


def test_detected_from_the_checkpoint_config(nf4_checkpoint, tiny_model_dir):
    from qeval_plugins.backend.checkpoints import checkpoint_quantization

    found = checkpoint_quantization(str(nf4_checkpoint))
    assert found["quant_method"] == "bitsandbytes"
    assert found["load_in_4bit"] is True and found["bnb_4bit_quant_type"] == "nf4"
    assert checkpoint_quantization(str(tiny_model_dir)) is None
    assert checkpoint_quantization("no/such-model-anywhere") is None


@pytest.mark.parametrize("quantizer", ["rtn", "bnb-int8"])
def test_quantizing_it_again_is_refused_in_one_line(nf4_checkpoint, quantizer):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError) as error:
        QevalLM(pretrained=str(nf4_checkpoint), quantizer=quantizer, device="cpu")
    message = str(error.value)
    assert "already quantized (quant_method=bitsandbytes)" in message
    assert f"quantizer '{quantizer}' cannot apply" in message and "\n" not in message
    assert "quantizer=prequantized" in message


def test_none_on_it_is_refused_and_points_to_prequantized(nf4_checkpoint):
    """It used to evaluate as quantizer=none; a results file then said "none" of a 4-bit model."""
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError, match=r"use quantizer=prequantized .*reference="):
        QevalLM(pretrained=str(nf4_checkpoint), quantizer="none", device="cpu")


def test_prequantized_on_an_unquantized_checkpoint_is_refused(tiny_model_dir):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError, match="not a quantized checkpoint; use quantizer=none"):
        QevalLM(pretrained=str(tiny_model_dir), quantizer="checkpoint", device="cpu")


def test_a_quantized_reference_is_refused(nf4_checkpoint, tiny_model_dir):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError, match=r"reference=.* is itself quantized"):
        QevalLM(pretrained=str(tiny_model_dir), quantizer="rtn", reference=str(nf4_checkpoint))


def test_a_missing_reference_is_named_as_the_reference(nf4_checkpoint):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError, match=r"^reference=/no/such/model: model path .* does not"):
        QevalLM(
            pretrained=str(nf4_checkpoint), quantizer="prequantized", reference="/no/such/model"
        )


def test_loading_it_gives_no_warning_about_a_config_nobody_passed(nf4_checkpoint):
    """HFLM handed the checkpoint's own quantization_config back to from_pretrained, and
    transformers warned "You passed `quantization_config` ..." though the user passed none."""
    import warnings

    from qeval_plugins.backend.lm import QevalLM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        QevalLM(pretrained=str(nf4_checkpoint), quantizer="prequantized", device="cpu")
    assert not [w for w in caught if "quantization_config" in str(w.message)]


def test_a_reference_with_another_tokenizer_is_refused(nf4_checkpoint):
    """The embedded model's 2,048-token vocabulary is not the test model's 384 tokens."""
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError) as error:
        QevalLM(pretrained=str(nf4_checkpoint), quantizer="prequantized", reference="qeval-tiny")
    assert "does not use the tokenizer of" in str(error.value)
    assert "tokens differ" in str(error.value)


def test_evaluated_as_prequantized_it_is_recorded_and_never_the_baseline(nf4_checkpoint, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qeval_plugins.paths import tasks_path
    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.load import load_runs

    results = lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={nf4_checkpoint},quantizer=prequantized",
        tasks=["qeval_demo_facts"],
        device="cpu",
        limit=4,
        task_manager=TaskManager(include_path=str(tasks_path())),
    )
    block = results["config"]["qeval"]
    assert block["quantizer"] == "prequantized"
    assert block["prequantized"]["quant_method"] == "bitsandbytes"
    assert block["scheme"]["weights"] == "nf4"
    # packed tensors are not parameters: no bits/param rather than a wrong one (21.8 before)
    assert block["param_count"] is None and block["param_bytes_before"] is None
    assert "bits_per_param" not in block and block["param_bytes_after"] > 0
    (tmp_path / "results.json").write_text(json.dumps(results, default=str))
    runs, _ = load_runs([str(tmp_path)])
    assert [run.label for run in runs] == ["prequantized (bitsandbytes nf4)"]
    [model] = compare(runs, None).comparisons
    assert model.baseline is None
    assert "no baseline" in model.baseline_reason


def test_it_has_no_unquantized_reference(nf4_checkpoint):
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained=str(nf4_checkpoint), quantizer="prequantized", device="cpu")
    with pytest.raises(QevalError, match=r"no unquantized reference.*add reference="):
        lm.on_reference_model(lambda model: model)


def test_an_ordinary_checkpoint_records_none(tiny_model_dir):
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained=str(tiny_model_dir), quantizer="none", device="cpu")
    assert lm.get_model_info()["qeval"]["prequantized"] is None


@pytest.mark.slow
@pytest.mark.parametrize("task", ["qeval_sqnr", "qeval_temperature_0.0"])
def test_tasks_that_need_the_reference_say_why_in_one_line(nf4_checkpoint, tasks_dir, task):
    """Not a complaint about a plugin's weight shapes (which it was for qeval_sqnr)."""
    from conftest import lm_eval_args, run_cli

    model_args = f"pretrained={nf4_checkpoint},quantizer=prequantized"
    result = run_cli(["lm_eval", *lm_eval_args(model_args, task, tasks_dir, "--limit", "1")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("qeval: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and "no unquantized reference" in errors[0]


def test_qeval_run_refuses_requantizing_before_any_run(nf4_checkpoint, tmp_path):
    from qeval_plugins.sweep.planning import plan_runs

    with pytest.raises(QevalError, match=r"is already quantized.*quantizer 'rtn' cannot apply"):
        plan_runs([str(nf4_checkpoint)], ["prequantized", "rtn"], tmp_path, "cpu")
    assert len(plan_runs([str(nf4_checkpoint)], ["prequantized"], tmp_path, "cpu")) == 1


@pytest.mark.slow
def test_with_reference_it_measures_what_quantizing_the_base_measures(
    nf4_checkpoint, tiny_model_dir, tasks_dir
):
    """The checkpoint *is* bnb-nf4 of the test model: qeval_sqnr of it against reference= must
    equal qeval_sqnr of quantizer=bnb-nf4 on the base (layers paired by name, same reference)."""
    from conftest import evaluate

    def sqnr(model_args: str) -> tuple[dict, dict]:
        results = evaluate(model_args, ["qeval_sqnr"], tasks_dir)
        return results["results"]["qeval_sqnr"], results["config"]["qeval"]

    saved, block = sqnr(
        f"pretrained={nf4_checkpoint},quantizer=prequantized,reference={tiny_model_dir}"
    )
    direct, _ = sqnr(f"pretrained={tiny_model_dir},quantizer=bnb-nf4")
    assert block["reference"] == str(tiny_model_dir)
    weights = block["sqnr"]["weights"]
    assert len(weights["layers"]) == 14 and not weights["missing_layers"]
    for metric in ("weight_sqnr_mean_db,none", "logit_sqnr_db,none", "kl_mean,none"):
        assert isinstance(saved[metric], float), (metric, saved[metric])
        assert saved[metric] == pytest.approx(direct[metric], rel=1e-4, abs=1e-6), metric
    assert 15 < saved["weight_sqnr_mean_db,none"] < 25  # NF4's ~20 dB, not a packed-layout artefact
