"""A GPTQ checkpoint written by GPTQModel (auto-gptq format) evaluated as it is, against its base.

The checkpoint is the one qeval's own ``gptq`` run leaves in the quantized-model cache (GPTQModel's
``save``), copied with the embedded model's tokenizer: ``quantizer=prequantized`` with
``reference=qeval-tiny`` must measure exactly what the ``gptq`` run measured on the same weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import evaluate

pytest.importorskip(
    "gptqmodel", reason="GPTQ checkpoints need GPTQModel: pip install 'qeval[gptq]'"
)
pytest.importorskip("optimum", reason="transformers loads GPTQ checkpoints through optimum")

CALIBRATION = "calibration_samples=16,calibration_seqlen=128"
SMALL = {"calibration_samples": 16, "calibration_seqlen": 128}


@pytest.mark.slow
def test_a_gptq_checkpoint_measures_what_quantizing_its_base_measured(tmp_path, tasks_dir):
    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
    from qeval_plugins.report.load import load_runs

    results = evaluate(
        f"pretrained=qeval-tiny,quantizer=gptq,{CALIBRATION}", ["qeval_sqnr"], tasks_dir
    )
    direct, block = results["results"]["qeval_sqnr"], results["config"]["qeval"]
    checkpoint = tmp_path / "qeval-tiny-gptq"
    shutil.copytree(block["quantized_cache"]["dir"], checkpoint)
    for file in EMBEDDED_MODELS["qeval-tiny"].glob("tokenizer*"):
        shutil.copy(file, checkpoint / file.name)
    config = json.loads((checkpoint / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "gptq" and config["bits"] == 4

    results = evaluate(
        f"pretrained={checkpoint},quantizer=prequantized,reference=qeval-tiny",
        ["qeval_sqnr"],
        tasks_dir,
    )
    saved, recorded = results["results"]["qeval_sqnr"], results["config"]["qeval"]
    assert recorded["prequantized"]["quant_method"] == "gptq"
    assert recorded["scheme"]["weights"] == "int4 g128"
    weights = recorded["sqnr"]["weights"]
    assert len(weights["layers"]) == 28 and weights["missing_layers"] == []  # 4 blocks × 7
    for metric in ("weight_sqnr_mean_db,none", "logit_sqnr_db,none", "kl_mean,none"):
        assert saved[metric] == pytest.approx(direct[metric], rel=1e-3), metric
    assert 15 < saved["weight_sqnr_mean_db,none"] < 20  # int4 g128 GPTQ: 17.2 dB measured

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(results, default=str))
    runs, _ = load_runs([str(tmp_path / "run")])
    assert [run.label for run in runs] == ["prequantized (gptq int4 g128 qeval-tiny-gptq)"]
    assert [run.model for run in runs] == ["qeval-tiny"]  # compared with its base model's runs


@pytest.mark.slow
def test_loading_a_gptq_checkpoint_keeps_gptqmodel_quiet(tmp_path):
    """GPTQModel printed an ASCII-art banner, environment notes and kernel-selection lines."""
    import subprocess
    import sys

    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", quantizer="gptq", device="cpu", **SMALL)
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(lm.get_model_info()["qeval"]["quantized_cache"]["dir"], checkpoint)
    code = (
        "from qeval_plugins.backend.lm import QevalLM; "
        f"QevalLM(pretrained={str(checkpoint)!r}, quantizer='prequantized', device='cpu')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    for noise in ("GPT-QModel", "Kernel: selected", "Python GIL", "Auto setting"):
        assert noise not in printed, noise
