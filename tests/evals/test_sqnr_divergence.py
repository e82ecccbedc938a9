"""qeval_sqnr's divergence statistics against a direct full-vocabulary float64 computation.

The reference is the embedded qeval-tiny model, the "quantized" model the same with every decoder
linear weight rounded to 3-bit integers (RTN, per channel). The expected values are computed here
with numpy in float64 from both models' full logits, independently of qeval's code.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_sqnr_task import sqnr_run

KL_NAMES = ["kl_max", "kl_p999", "kl_p99", "kl_p95", "kl_p90", "kl_median"]
KL_NAMES += ["kl_p10", "kl_p5", "kl_p1", "kl_p01", "kl_min"]
QUANTILES = {"max": 100, "p999": 99.9, "p99": 99, "p95": 95, "p90": 90, "p75": 75, "median": 50}
QUANTILES.update({"p25": 25, "p10": 10, "p5": 5, "p1": 1, "p01": 0.1, "min": 0})


@pytest.fixture(scope="module")
def models(base):
    from qeval_plugins.formats.rounding import quantize_dequantize

    quantized = copy.deepcopy(base)
    with torch.no_grad():
        for module in quantized.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(quantize_dequantize(module.weight, "int", bits=3))
    return base, quantized


@pytest.fixture(scope="module")
def texts(held_out):
    return [ids[:64] for ids in held_out[:3]]


def log_softmax64(model, ids) -> np.ndarray:
    with torch.no_grad():
        z = model(ids[None]).logits[0, :-1].double().numpy()
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.fixture(scope="module")
def truth(models, texts):
    """Per-token float64 values pooled over the texts: KL both ways, NLLs, agreement."""
    reference, quantized = models
    pooled = {name: [] for name in ("kl", "reverse", "nll_base", "nll_q", "agree", "position")}
    for ids in texts:
        log_p, log_q = log_softmax64(reference, ids), log_softmax64(quantized, ids)
        p, q = np.exp(log_p), np.exp(log_q)
        rows, targets = np.arange(len(ids) - 1), ids[1:].numpy()
        pooled["kl"].append((p * (log_p - log_q)).sum(1))
        pooled["reverse"].append((q * (log_q - log_p)).sum(1))
        pooled["nll_base"].append(-log_p[rows, targets])
        pooled["nll_q"].append(-log_q[rows, targets])
        pooled["agree"].append(log_p.argmax(1) == log_q.argmax(1))
        pooled["position"].append(rows)
    return {name: np.concatenate(values) for name, values in pooled.items()}


def engine_statistics(models, texts, mode: str):
    from qeval_plugins.evals.sqnr import engine

    reference, quantized = models
    settings = engine.SqnrSettings(
        max_tokens=64, top_k=8, logit_positions=1, activation_tokens=1, kl=mode
    )
    cached = engine.compute_reference(reference, texts, settings)
    engine.check_reference(cached, texts, settings)
    results = engine.compare(quantized, texts, cached)
    return results, engine.statistics(results), engine.divergence_mode(settings, results)


def se(values: np.ndarray) -> float:
    return values.std(ddof=1) / math.sqrt(len(values))


def assert_probability_statistics_exact(stats: dict, truth: dict) -> None:
    """Δp, perplexity and agreement statistics need p_base(correct) only: exact in both modes."""
    n = len(truth["kl"])
    dp = np.exp(-truth["nll_q"]) - np.exp(-truth["nll_base"])
    close = {"rel": 1e-9, "abs": 1e-12}
    assert stats["dp_mean"] == pytest.approx(dp.mean(), **close)
    assert stats["dp_mean_err"] == pytest.approx(se(dp), **close)
    for name, q in QUANTILES.items():
        assert stats[f"dp_{name}"] == pytest.approx(np.percentile(dp, q), **close), name
    rms = math.sqrt((dp**2).mean())
    assert stats["rms_dp"] == pytest.approx(rms, **close)
    assert stats["rms_dp_err"] == pytest.approx(0.5 * se(dp**2) / rms, **close)
    ln_ratio = truth["nll_q"].mean() - truth["nll_base"].mean()
    assert stats["ln_ppl_ratio"] == pytest.approx(ln_ratio, **close)
    assert stats["ln_ppl_ratio_err"] == pytest.approx(se(truth["nll_q"] - truth["nll_base"]))
    assert stats["ppl_ratio"] == pytest.approx(math.exp(ln_ratio), **close)
    corr = np.corrcoef(truth["nll_q"], truth["nll_base"])[0, 1]
    assert stats["ln_ppl_corr"] == pytest.approx(corr, **close)
    assert stats["ppl_quantized_err"] == pytest.approx(
        math.exp(truth["nll_q"].mean()) * se(truth["nll_q"]), **close
    )
    share = truth["agree"].mean()
    assert stats["top1_agreement_err"] == pytest.approx(math.sqrt(share * (1 - share) / (n - 1)))


def test_exact_mode_matches_float64_within_its_stated_bound(models, texts, truth):
    results, stats, mode = engine_statistics(models, texts, "exact")
    assert mode["kl_mode"] == "exact"
    bound, bound_max = mode["kl_error_bound"], mode["kl_error_bound_max"]
    assert 0 < bound <= bound_max and bound < 1e-3 * stats["kl_mean"]  # 0.03 % on qeval-tiny
    kl = np.concatenate([r["kl"] for r in results])
    per_token = np.concatenate([r["kl_bound"] for r in results])
    assert (np.abs(kl - truth["kl"]) <= per_token).all()
    assert stats["kl_mean"] == pytest.approx(truth["kl"].mean(), abs=bound)
    assert stats["kl_mean_err"] == pytest.approx(se(truth["kl"]), abs=bound_max)
    for name in KL_NAMES:
        assert stats[name] == pytest.approx(
            np.percentile(truth["kl"], percent(name)), abs=bound_max
        ), name
    reverse_bound = mode["kl_reverse_error_bound_max"]
    assert stats["kl_reverse_mean"] == pytest.approx(
        truth["reverse"].mean(), abs=mode["kl_reverse_error_bound"]
    )
    symmetric = truth["kl"] + truth["reverse"]
    assert stats["kl_symmetric_mean"] == pytest.approx(
        symmetric.mean(), abs=bound_max + reverse_bound
    )
    early = truth["position"] < 32
    assert stats["kl_mean_pos_early"] == pytest.approx(truth["kl"][early].mean(), abs=bound_max)
    assert stats["kl_mean_pos_late"] == pytest.approx(truth["kl"][~early].mean(), abs=bound_max)
    assert_probability_statistics_exact(stats, truth)


def percent(name: str) -> float:
    """kl_p999 -> 99.9, kl_p01 -> 0.1, kl_p5 -> 5, kl_median -> 50, kl_max -> 100."""
    return QUANTILES[name.split("_", 1)[1]]


def test_topk_mode_is_a_lower_bound_and_the_rest_is_exact(models, texts, truth):
    results, stats, mode = engine_statistics(models, texts, "topk")
    assert mode["kl_mode"] == "topk" and mode["kl_error_bound"] == "inf"
    kl = np.concatenate([r["kl"] for r in results])
    reverse = np.concatenate([r["kl_reverse"] for r in results])
    assert (kl <= truth["kl"] + 1e-9).all() and (reverse <= truth["reverse"] + 1e-9).all()
    assert stats["kl_mean"] <= truth["kl"].mean()
    assert stats["kl_reverse_mean"] <= truth["reverse"].mean()
    for name in KL_NAMES:  # order statistics of a pointwise lower bound are lower bounds
        assert stats[name] <= np.percentile(truth["kl"], percent(name)) + 1e-9, name
    assert_probability_statistics_exact(stats, truth)


def test_the_results_carry_every_statistic_the_mode_and_the_worst_tokens(
    tiny_model_dir, tasks_dir, monkeypatch, tmp_path
):
    from qeval_plugins.evals.sqnr.task import AGGREGATIONS, HIGHER_IS_BETTER
    from qeval_plugins.metrics.directions import direction

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    runs = {
        mode: sqnr_run(
            tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", limit=3, kl=mode, log_samples=True
        )
        for mode in ("topk", "exact")
    }
    # one cache entry per mode: a top-k entry is never read as an exact one
    assert len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 2
    for mode, run in runs.items():
        metrics, divergence = run["metrics"], run["block"]["sqnr"]["divergence"]
        assert set(AGGREGATIONS) <= set(metrics)
        assert divergence["kl_mode"] == mode
        worst = divergence["worst_tokens"]
        assert len(worst) == 10 and worst[0]["kl"] == metrics["kl_max"]
        assert [w["kl"] for w in worst] == sorted((w["kl"] for w in worst), reverse=True)
        assert all(isinstance(w["context"], str) and isinstance(w["token"], str) for w in worst)
        assert metrics["ppl_ratio"] == pytest.approx(
            metrics["ppl_quantized"] / metrics["ppl_reference"]
        )
        json.dumps(run["block"], allow_nan=False)  # strict JSON
        # the sample log never shows a run-level value as a per-document number
        assert all(
            sample["kl_median"] == {"run": metrics["kl_median"]} for sample in run["samples"]
        )
    assert runs["topk"]["metrics"]["kl_error_bound"] == "inf"
    assert 0 < runs["exact"]["metrics"]["kl_error_bound"] < 1e-3
    assert runs["exact"]["metrics"]["kl_mean"] > runs["topk"]["metrics"]["kl_mean"]
    # uncertainties and signed differences have no direction: never a degradation
    assert direction("kl_mean_err") is None and direction("dp_mean") is None
    assert HIGHER_IS_BETTER["kl_median"] is False and direction("ln_ppl_corr") is True


def test_cache_key_separates_the_modes_and_ignores_the_budget():
    from qeval_plugins.evals.sqnr.engine import SqnrSettings
    from qeval_plugins.storage.reference_cache import reference_key

    def key(**settings):
        return reference_key(["m"], [[1, 2, 3]], SqnrSettings(**settings).cache_settings(), "f32")

    assert key(kl="topk") != key(kl="exact")
    assert key(kl="exact", kl_cache_budget="1G") == key(kl="exact", kl_cache_budget="9G")


def test_a_topk_cache_entry_fails_the_exact_structure_check(models, texts):
    from qeval_plugins.evals.sqnr import engine

    topk = engine.SqnrSettings(
        max_tokens=64, top_k=8, logit_positions=1, activation_tokens=1, kl="topk"
    )
    cached = engine.compute_reference(models[0], texts, topk)
    exact = engine.SqnrSettings(**{**topk.__dict__, "kl": "exact"})
    with pytest.raises(ValueError, match="codes"):
        engine.check_reference(cached, texts, exact)


def test_over_budget_is_one_line_before_any_pass(tiny_model_dir, tasks_dir, monkeypatch, tmp_path):
    from qeval_plugins import QevalError
    from qeval_plugins.evals.sqnr import engine

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(engine, "compute_reference", lambda *a: pytest.fail("reference ran"))
    with pytest.raises(QevalError) as refused:
        sqnr_run(
            tiny_model_dir,
            tasks_dir,
            "quantizer=rtn,bits=3",
            limit=2,
            kl="exact",
            kl_cache_budget="10K",
        )
    message = str(refused.value)
    assert "\n" not in message and "kl_cache_budget" in message and "kl=topk" in message
    # 2 texts x 48 scored tokens x (2 x 384 + 32) bytes = 76,800 bytes
    assert "needs 0.1 MiB of reference cache (96 scored tokens of 2 texts x 384" in message
    assert '"kl_cache_budget": "1M"' in message


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"kl": "fast"}, "'kl' must be one of auto, exact, topk, got 'fast'"),
        ({"kl_cache_budget": "lots"}, "'kl_cache_budget' 'lots' is not a size"),
    ],
)
def test_kl_settings_are_validated(settings, error):
    from qeval_plugins import QevalError
    from qeval_plugins.evals.sqnr.engine import SqnrSettings

    with pytest.raises(QevalError, match=error):
        SqnrSettings.from_mapping(settings)
    assert SqnrSettings.from_mapping({"kl_cache_budget": 4096}).budget_bytes() == 4096


def sqnr_report_run(metrics: dict, divergence: dict):
    from pathlib import Path

    from qeval_plugins.report.runs import Metric, Run

    return Run(
        path=Path("r.json"),
        model="m",
        label="rtn:bits=3",
        config={},
        metrics={"qeval_sqnr": {k: Metric(v, None, None) for k, v in metrics.items()}},
        qeval={"sqnr": {"divergence": divergence}},
    )


def test_report_shows_the_divergence_grid_with_mode_and_a_printable_worst_token():
    from qeval_plugins.report.sqnr import divergence_grid, sqnr_summary

    metrics = {"kl_mean": 0.25, "kl_mean_err": 0.01, "kl_median": 0.125, "kl_max": 3.5}
    metrics.update(rms_dp=0.004, rms_dp_err=0.0005, ppl_ratio=1.0625, ln_ppl_corr=0.98)
    worst = [{"context": "x" * 40 + "the \x1b[2Jclear", "token": "\u202eevil"}]
    exact = sqnr_summary(sqnr_report_run(metrics, {"kl_mode": "exact", "worst_tokens": worst}))
    topk = sqnr_summary(sqnr_report_run(metrics, {"kl_mode": "topk", "worst_tokens": "junk"}))
    grid = divergence_grid("m", [exact, topk])
    [first, second] = [[" ".join(t for t, _ in cell) for cell in row] for row in grid.rows]
    assert first[1:3] == ["0.250 ±0.010", "0.125"] and first[3] == "—"  # no kl_p99: a dash
    assert first[6] == "0.004 ±0.0005" and first[-2] == "exact" and second[-2] == "top-k ≥"
    # every KL of the top-k run is marked a lower bound; Δp, PPL ratio are exact in both modes
    assert second[1:5] == ["≥ 0.250 ±0.010", "≥ 0.125", "—", "≥ 3.500"]
    assert second[6:9] == first[6:9] and "lower bound" in grid.caption
    assert first[-1] == "…" + "x" * 11 + "the \\x1b[2Jclear⟨\\u202eevil⟩" and second[-1] == "—"
    old = sqnr_summary(sqnr_report_run({"kl_mean": 0.25}, {}))
    assert divergence_grid("m", [old]) is None  # results from before these statistics


# ---------------------------------------------------------------- kl=auto: exact when it fits


def kl_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "kl=auto" in r.getMessage()]


def test_the_default_kl_is_exact_when_its_cache_fits(
    tiny_model_dir, tasks_dir, monkeypatch, tmp_path, caplog
):
    """No kl setting: exact KL (top-k was the default, 0.47-0.65x the exact KL on real models);
    the cache key holds the mode used, so an explicit kl=exact run reuses the entry."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="qeval"):
        default = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", limit=3)
    sqnr = default["block"]["sqnr"]
    assert sqnr["settings"]["kl"] == "auto" and kl_warnings(caplog) == []
    assert sqnr["divergence"]["kl_mode"] == "exact"
    assert sqnr["divergence"]["kl_is_lower_bound"] is False
    assert "kl_fallback" not in sqnr["divergence"]
    assert 0 < default["metrics"]["kl_error_bound"] < 1e-3
    exact = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", limit=3, kl="exact")
    assert exact["block"]["sqnr"]["reference_cache"]["reused"] is True
    assert exact["metrics"]["kl_mean"] == default["metrics"]["kl_mean"]


def test_a_budget_too_small_falls_back_to_topk_with_one_warning(
    tiny_model_dir, tasks_dir, monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="qeval"):
        small = sqnr_run(
            tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", limit=2, kl_cache_budget="10K"
        )
    divergence = small["block"]["sqnr"]["divergence"]
    assert divergence["kl_mode"] == "topk" and divergence["kl_is_lower_bound"] is True
    assert small["metrics"]["kl_error_bound"] == "inf"
    # 2 texts x 48 scored tokens x (2 x 384 + 32) bytes = 76,800 bytes
    reason = (
        "exact KL needs 0.1 MiB of reference cache (96 scored tokens of 2 texts x 384 vocabulary "
        "entries x 2 bytes), over kl_cache_budget=10K; raise it with --metadata "
        '\'{"kl_cache_budget": "1M"}\' for exact KL'
    )
    assert kl_warnings(caplog) == [f"qeval_sqnr kl=auto uses top-k KL, a lower bound: {reason}"]
    assert divergence["kl_fallback"] == reason
    # the top-k entry is cached under its mode: a run whose exact cache fits does not read it
    fits = sqnr_run(tiny_model_dir, tasks_dir, "quantizer=rtn,bits=3", limit=2)
    assert fits["block"]["sqnr"]["reference_cache"]["reused"] is False
    assert fits["block"]["sqnr"]["divergence"]["kl_mode"] == "exact"
    assert fits["metrics"]["kl_mean"] > small["metrics"]["kl_mean"]
    assert len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 2


def test_exact_kl_fits_the_default_budget_up_to_llama_3s_vocabulary():
    """The bundled passages, each cut at max_tokens = 256 scored tokens whatever the tokenizer:
    exact KL's codes for Llama-3's 128,256-entry vocabulary take 2.45 GiB of the default 4 GiB;
    a vocabulary above 209,699 entries would not fit and falls back to top-k."""
    from qeval_plugins.evals.sqnr.engine import SqnrSettings, exact_cache_bytes, resolve_kl
    from qeval_plugins.evals.sqnr.task import load_texts

    settings = SqnrSettings()
    assert settings.kl == "auto" and settings.budget_bytes() == 4 * 2**30
    passages = load_texts()["test"]
    longest = [torch.zeros(1 + settings.max_tokens, dtype=torch.long)] * len(passages)
    assert len(passages) == 40
    assert exact_cache_bytes(longest, 128_256) == 40 * 256 * (2 * 128_256 + 32) == 2_627_010_560
    assert resolve_kl(settings, longest, 128_256) == (replace(settings, kl="exact"), "")
    assert resolve_kl(settings, longest, 209_699)[0].kl == "exact"
    over, reason = resolve_kl(settings, longest, 209_700)
    assert over.kl == "topk" and "over kl_cache_budget=4G" in reason and '"5G"' in reason
    unknown, reason = resolve_kl(settings, longest, None)
    assert unknown.kl == "topk" and "no vocab_size" in reason
    for mode in ("exact", "topk"):  # an explicit mode is kept
        assert resolve_kl(replace(settings, kl=mode), longest, 10**9)[0].kl == mode
    with pytest.raises(ValueError, match="resolve_kl"):  # never keyed or computed unresolved
        settings.cache_settings()


def test_report_and_exports_mark_a_topk_kl_as_a_lower_bound():
    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.export import to_html, to_json, to_markdown
    from qeval_plugins.report.sqnr import SQNR_COLUMNS, sqnr_grids

    metrics = {"kl_mean": 0.25, "kl_median": 0.125, "logit_sqnr_db": 20.0}
    runs = [sqnr_report_run(metrics, {"kl_mode": "topk"})]
    runs.append(sqnr_report_run(metrics, {"kl_mode": "exact"}))
    runs[1].label = "rtn:bits=4"
    report = compare(runs)
    summary = sqnr_grids(report.comparisons[0])[0]
    kl_column = 1 + [name for name, _ in SQNR_COLUMNS].index("kl_mean")
    cells = {row[0][0][0]: row[kl_column][0][0] for row in summary.rows}
    assert cells == {"rtn:bits=3": "≥ 0.250", "rtn:bits=4": "0.250"}
    assert summary.caption == "KL ≥: top-k mode, a lower bound of the exact KL"
    assert "≥ 0.250" in to_markdown(report) and "≥ 0.250" in to_html(report)
    sqnr = {entry["label"]: entry for entry in json.loads(to_json(report))["models"][0]["sqnr"]}
    assert sqnr["rtn:bits=3"]["kl_is_lower_bound"] is True
    assert sqnr["rtn:bits=4"]["kl_is_lower_bound"] is False
