"""A checkpoint saved already quantized (here: bitsandbytes NF4) is detected, recorded, never an
unquantized baseline, and refused by quantizers that would quantize it a second time."""

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


def test_evaluated_with_none_it_is_recorded_and_never_the_baseline(nf4_checkpoint, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qeval_plugins.paths import tasks_path
    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.load import load_runs

    results = lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={nf4_checkpoint},quantizer=none",
        tasks=["qeval_demo_facts"],
        device="cpu",
        limit=4,
        task_manager=TaskManager(include_path=str(tasks_path())),
    )
    block = results["config"]["qeval"]
    assert block["quantizer"] == "none"
    assert block["prequantized"]["quant_method"] == "bitsandbytes"
    # packed tensors are not parameters: no bits/param rather than a wrong one (21.8 before)
    assert block["param_count"] is None and block["param_bytes_before"] is None
    assert "bits_per_param" not in block and block["param_bytes_after"] > 0
    (tmp_path / "results.json").write_text(json.dumps(results, default=str))
    runs, _ = load_runs([str(tmp_path)])
    [model] = compare(runs, None).comparisons
    assert model.baseline is None
    assert "no baseline" in model.baseline_reason


def test_it_has_no_unquantized_reference(nf4_checkpoint):
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained=str(nf4_checkpoint), quantizer="none", device="cpu")
    with pytest.raises(QevalError, match="no unquantized reference"):
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

    model_args = f"pretrained={nf4_checkpoint},quantizer=none"
    result = run_cli(["lm_eval", *lm_eval_args(model_args, task, tasks_dir, "--limit", "1")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("qeval: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and "no unquantized reference" in errors[0]


def test_qeval_run_refuses_requantizing_before_any_run(nf4_checkpoint, tmp_path):
    from qeval_plugins.cli.sweep import plan_runs

    with pytest.raises(QevalError, match=r"is already quantized.*quantizer 'rtn' cannot apply"):
        plan_runs([str(nf4_checkpoint)], ["none", "rtn"], tmp_path, "cpu")
    assert len(plan_runs([str(nf4_checkpoint)], ["none"], tmp_path, "cpu")) == 1
