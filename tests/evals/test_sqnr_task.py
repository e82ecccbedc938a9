"""The qeval_sqnr task: weight, output and activation divergence against the unquantized model."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from conftest import lm_eval_args, run_cli

SETTINGS = {"max_tokens": 48, "logit_positions": 64, "activation_tokens": 64}


def sqnr_run(
    model_dir,
    tasks_dir,
    quantizer_args: str,
    limit: int = 6,
    tasks=("qeval_sqnr",),
    log_samples: bool = False,
    **settings,
) -> dict:
    """simple_evaluate of ``tasks``; qeval_sqnr's {"metrics": ..., "block": config.qeval} (and
    "samples", lm-eval's per-document log, with ``log_samples``). "metrics": the table metrics of
    ``results`` and the rest, from the block's ``sqnr.metrics``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(tasks_dir), include_defaults=False, metadata={**SETTINGS, **settings}
    )
    results = lm_eval.simple_evaluate(
        model="qeval",
        model_args=f"pretrained={model_dir},{quantizer_args}",
        tasks=list(tasks),
        device="cpu",
        limit=limit,
        task_manager=manager,
        log_samples=log_samples,
    )
    metrics = {
        k.split(",")[0]: v
        for k, v in results["results"]["qeval_sqnr"].items()
        if k.endswith(",none")
    }
    metrics |= results["config"]["qeval"]["sqnr"]["metrics"]
    samples = results.get("samples", {}).get("qeval_sqnr")
    return {"metrics": metrics, "block": results["config"]["qeval"], "samples": samples}


@pytest.fixture(scope="module")
def rtn_runs(tiny_model_dir, tasks_dir):
    return {
        bits: sqnr_run(tiny_model_dir, tasks_dir, f"quantizer=rtn,bits={bits},group_size=0")
        for bits in (2, 3, 4, 8)
    }


def test_unquantized_is_infinite_sqnr_zero_kl_full_agreement(tiny_model_dir, tasks_dir):
    metrics = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=none")["metrics"]
    for name in (
        "logit_sqnr_db",
        "weight_sqnr_mean_db",
        "weight_sqnr_min_db",
        "weight_sqnr_global_db",
        "activation_sqnr_last_db",
        "activation_sqnr_min_db",
    ):
        assert metrics[name] == "inf", name
    assert metrics["kl_mean"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["kl_p99"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["top1_agreement"] == 1.0
    assert metrics["ppl_delta"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["ppl_reference"] == metrics["ppl_quantized"] > 1.0
    for name in ("kl_max", "kl_median", "kl_reverse_mean", "kl_symmetric_mean", "rms_dp"):
        assert metrics[name] == pytest.approx(0.0, abs=1e-9), name
    assert metrics["ppl_ratio"] == 1.0 and metrics["ln_ppl_ratio"] == 0.0
    assert metrics["top1_agreement_err"] == 0.0 and metrics["ln_ppl_corr"] == pytest.approx(1.0)


def test_sqnr_rises_with_bits(rtn_runs):
    weight = {b: run["metrics"]["weight_sqnr_global_db"] for b, run in rtn_runs.items()}
    logit = {b: run["metrics"]["logit_sqnr_db"] for b, run in rtn_runs.items()}
    kl = {b: run["metrics"]["kl_mean"] for b, run in rtn_runs.items()}
    assert weight[2] < weight[3] < weight[4] < weight[8]
    assert logit[2] < logit[3] < logit[4] < logit[8]
    assert kl[2] > kl[3] > kl[4] > kl[8] > 0
    assert (weight[8] - weight[4]) / 4 == pytest.approx(6.02, abs=0.6)  # ~6 dB per bit
    agreement = {b: run["metrics"]["top1_agreement"] for b, run in rtn_runs.items()}
    assert agreement[2] < agreement[8] <= 1.0


def test_weight_sqnr_matches_an_independent_computation(rtn_runs, tiny_model_dir):
    """Per layer, against torch.ao.ns's compute_sqnr on float32 copies, to 0.01 dB."""
    from safetensors.torch import load_file
    from torch.ao.ns.fx.utils import compute_sqnr

    from qeval_plugins.formats.rounding import quantize_dequantize

    layers = rtn_runs[4]["block"]["sqnr"]["weights"]["layers"]
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert len(layers) == 2 * 7  # 2 blocks × (q, k, v, o, gate, up, down); no embeddings/head
    for name, reported in layers.items():
        weight = original[f"{name}.weight"].float()
        quantized = quantize_dequantize(weight, "int", bits=4, group_size=0)
        assert reported == pytest.approx(float(compute_sqnr(weight, quantized)), abs=0.01)


def test_worst_layers_and_blocks_are_recorded(rtn_runs):
    sqnr = rtn_runs[3]["block"]["sqnr"]
    worst = sqnr["weights"]["worst"]
    assert len(worst) == 5 and worst[0]["sqnr_db"] == sqnr["weights"]["min_db"]
    assert [w["sqnr_db"] for w in worst] == sorted(w["sqnr_db"] for w in worst)
    blocks = sqnr["activation_blocks_db"]
    assert len(blocks) == 2 and all(isinstance(v, float) for v in blocks)
    assert rtn_runs[3]["metrics"]["activation_sqnr_min_db"] == min(blocks)


def test_nf4_beats_fp4_on_weight_sqnr(tiny_model_dir, tasks_dir):
    nf4 = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=2)["metrics"]
    fp4 = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-fp4", limit=2)["metrics"]
    assert nf4["weight_sqnr_global_db"] > fp4["weight_sqnr_global_db"]
    assert math.isfinite(nf4["kl_mean"]) and nf4["kl_mean"] > 0


@pytest.mark.parametrize("cpu_layout", ["standard", "avx512-bf16"])
def test_bnb_weight_sqnr_after_forward_passes_in_either_cpu_layout(
    tiny_model_dir, tasks_dir, monkeypatch, cpu_layout
):
    """qeval_demo_facts runs first: on AVX512-BF16 CPUs its forward passes repack 4-bit weights.

    The weight SQNR was -3.2 dB there. The standard layout is forced by hiding the instruction set
    from bitsandbytes; the repacked one needs the real CPU (its unit test forces it anywhere).
    """
    import bitsandbytes.nn.modules as bnb_modules

    if cpu_layout == "standard":
        monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: False)
    elif not bnb_modules.has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    run = sqnr_run(
        tiny_model_dir,
        tasks_dir,
        "quantizer=bnb-nf4",
        limit=2,
        tasks=("qeval_demo_facts", "qeval_sqnr"),
    )
    assert 18.0 < run["metrics"]["weight_sqnr_mean_db"] < 24.0


def test_reference_is_cached_reused_and_invalidated(
    tiny_model_dir, tasks_dir, monkeypatch, tmp_path
):
    from qeval_plugins.evals.sqnr import engine as sqnr

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    first = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=4", limit=3)
    assert first["block"]["sqnr"]["reference_cache"]["reused"] is False
    assert len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 1

    calls = []
    original = sqnr.compute_reference
    monkeypatch.setattr(sqnr, "compute_reference", lambda *a: calls.append(1) or original(*a))
    second = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=3)
    assert second["block"]["sqnr"]["reference_cache"]["reused"] is True and calls == []

    sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=4)  # other texts
    sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=3, top_k=8)  # other settings
    assert len(calls) == 2
    config = tiny_model_dir / "config.json"
    config.touch()  # a new mtime, the same bytes: the same reference
    sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=3)
    assert len(calls) == 2
    config.write_text(config.read_text() + "\n")  # other bytes: the model may have changed
    sqnr_run(tiny_model_dir, tasks_dir, "quantizer=bnb-nf4", limit=3)
    assert len(calls) == 3


def test_users_own_text_file(tiny_model_dir, tasks_dir, tmp_path):
    texts = tmp_path / "mine.txt"
    texts.write_text("The first passage of my own.\n\nA second, longer passage of my own text.\n")
    run = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", text_file=str(texts))
    assert run["metrics"]["top1_agreement"] <= 1.0
    assert run["block"]["sqnr"]["settings"]["max_tokens"] == SETTINGS["max_tokens"]


@pytest.mark.slow
def test_through_the_stock_cli_and_hf_is_refused(tiny_model_dir, tasks_dir, tmp_path):
    output = ("--output_path", str(tmp_path / "out"))
    result = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                f"pretrained={tiny_model_dir},quantizer=nf4",
                "qeval_sqnr",
                tasks_dir,
                "--limit",
                "3",
                *output,
            ),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    data = json.loads(results_file.read_text())
    assert set(data["results"]["qeval_sqnr"]) >= {"logit_sqnr_db,none", "kl_mean,none"}
    assert data["config"]["qeval"]["sqnr"]["weights"]["worst"]

    refused = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                f"pretrained={tiny_model_dir}", "qeval_sqnr", tasks_dir, "--limit", "3", model="hf"
            ),
        ],
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("qeval: error:")]
    assert len(errors) == 1 and "needs --model qeval (got HFLM)" in errors[0]
    assert "Traceback" not in refused.stderr


def test_settings_are_validated():
    from qeval_plugins import QevalError
    from qeval_plugins.evals.sqnr.engine import SqnrSettings

    with pytest.raises(QevalError, match="'top_k' must be a positive integer"):
        SqnrSettings.from_mapping({"top_k": 0})
    assert SqnrSettings.from_mapping({"version": 1.0, "top_k": 4}).top_k == 4


def test_cache_entry_is_small(tiny_model_dir):
    """Bounded cache: per token top-k + a few scalars, full logits only at kept positions."""
    from transformers import AutoModelForCausalLM

    from qeval_plugins.evals.sqnr.engine import SqnrSettings, compute_reference

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    texts = [torch.arange(2, 130)] * 4
    settings = SqnrSettings(
        max_tokens=128, top_k=8, logit_positions=10, activation_tokens=16, kl="topk"
    )
    entries = compute_reference(model, texts, settings)["texts"]
    kept_logits = sum(e["logits"].shape[0] for e in entries)
    kept_tokens = sum(e["blocks"].shape[1] for e in entries)
    assert kept_logits == 10 and kept_tokens == 16
    assert entries[0]["topk_logprobs"].shape == (127, 8)

    # what is written to disk is what the entries hold, not the [T, V] tensors they came from
    written = io.BytesIO()
    torch.save({"texts": entries}, written)
    vocabulary, hidden = model.config.vocab_size, model.config.hidden_size
    blocks = model.config.num_hidden_layers
    # per token: top-k float32 log-probs and int32 ids, float32 tail, float64 nll
    held = 127 * (4 * 8 + 4 * 8 + 4 + 8) + 4 * (10 * vocabulary + 16 * blocks * hidden)
    assert written.tell() < held + 64_000  # + torch.save's per-tensor overhead

    # kl=exact adds 2 bytes per vocabulary entry and 32 per position: T·(2V + 32)
    exact = compute_reference(model, texts, SqnrSettings(**{**settings.__dict__, "kl": "exact"}))
    written_exact = io.BytesIO()
    torch.save(exact, written_exact)
    codes = 4 * 127 * (2 * vocabulary + 32)
    assert held + codes < written_exact.tell() < held + codes + 96_000


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models(tiny_model_dir, tasks_dir, dtype):
    none = sqnr_run(tiny_model_dir, tasks_dir, f"quantizer=none,dtype={dtype}", limit=2)
    assert none["metrics"]["weight_sqnr_global_db"] == "inf"
    assert none["metrics"]["logit_sqnr_db"] == "inf"
    rtn = sqnr_run(tiny_model_dir, tasks_dir, f"quantizer=rtn,bits=4,dtype={dtype}", limit=2)
    weight = rtn["metrics"]["weight_sqnr_global_db"]
    assert isinstance(weight, float) and 10 < weight < 40
    assert math.isfinite(rtn["metrics"]["kl_mean"]) and rtn["metrics"]["kl_mean"] > 0


def test_minus_infinite_sqnr_keeps_its_sign_in_every_summary():
    """A layer whose reference is all zeros but whose quantized weight is not is the worst case."""
    from qeval_plugins.evals.sqnr.engine import _worst, summarize_weights

    energies = {"good": (100.0, 1.0), "zero_reference": (0.0, 4.0), "exact": (9.0, 0.0)}
    summary = summarize_weights(energies, worst=2)
    assert summary["layers"] == {"good": 20.0, "zero_reference": "-inf", "exact": "inf"}
    assert summary["mean_db"] == "-inf" and summary["min_db"] == "-inf"
    assert summary["worst"][0] == {"layer": "zero_reference", "sqnr_db": "-inf"}
    assert summary["global_db"] == pytest.approx(10 * math.log10(109 / 5), abs=1e-4)
    assert summary["unchanged_layers"] == 1
    # a layer kept exactly (no noise) is left out of the mean instead of making it inf
    kept = summarize_weights({"good": (100.0, 1.0), "fair": (100.0, 10.0), "exact": (9.0, 0.0)}, 1)
    assert kept["mean_db"] == pytest.approx(15.0) and kept["unchanged_layers"] == 1
    assert kept["min_db"] == 10.0 and kept["layers"]["exact"] == "inf"
    assert summarize_weights({"exact": (9.0, 0.0)}, 1)["mean_db"] == "inf"
    assert _worst([12.5, "-inf", "inf"]) == "-inf"
    assert _worst([12.5, "inf"]) == 12.5
    assert _worst(["inf"]) == "inf" and _worst([]) is None


def test_a_misspelt_setting_is_one_line_not_silently_ignored():
    """lm-eval merges the model_args into the metadata, so unrelated keys must still pass."""
    from qeval_plugins import QevalError
    from qeval_plugins.evals.sqnr.engine import SqnrSettings

    with pytest.raises(QevalError, match=r"qeval_sqnr setting 'topk' is not known\. Did you mean"):
        SqnrSettings.from_mapping({"topk": 5})
    with pytest.raises(QevalError, match=r"'Max_Tokens' is not known\. Did you mean 'max_tokens'"):
        SqnrSettings.from_mapping({"Max_Tokens": 5})
    settings = SqnrSettings.from_mapping(
        {"pretrained": "qeval-tiny", "quantizer": "rtn", "bits": 3, "top_k": 5, "version": 1.0}
    )
    assert settings.top_k == 5
