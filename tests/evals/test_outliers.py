"""The qeval_outliers task: LLM.int8() outlier features, activation and weight statistics.

Figures are checked against independent computations: the projection inputs are read here as the
outputs of the norms (forward hooks on ``input_layernorm`` / ``post_attention_layernorm``, not
the engine's pre-hooks on the linears), kurtosis with ``scipy.stats.kurtosis``. The test model
is the embedded one with hidden dimensions 5, 40, 99 ×50 at the norms (and the matching input
columns of the linears ÷50: the same function), as in tests/quantizers/test_activations.py.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import scipy.stats
import torch
from conftest import OUTLIER_DIMS, evaluate, inject_outliers

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.registry import get_registry
from qeval_plugins.evals.outliers import engine, stats
from qeval_plugins.evals.outliers.engine import OutlierSettings

SETTINGS = OutlierSettings(max_tokens=96)


@pytest.fixture(scope="module")
def texts(tokenizer, tasks_dir):
    """The first four bundled passages, the BOS token then 95 tokens each."""
    lines = (tasks_dir / "qeval_sqnr" / "passages.jsonl").read_text().splitlines()[:4]
    ids = [
        tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"] for line in lines
    ]
    return [torch.tensor([tokenizer.bos_token_id, *row[:95]]) for row in ids]


@pytest.fixture(scope="module")
def outlier_model(base):
    return inject_outliers(base)


def measure(model, texts, settings=SETTINGS):
    return engine.measure(model, texts, settings, get_registry().dequantize_weight)


def direct(model, texts, threshold=6.0):
    """Per layer, the norm outputs over all texts (the projection inputs, read independently),
    and per hidden dimension the positions at which some layer reaches ``threshold``."""
    layers = model.model.layers
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [
        norm.register_forward_hook(lambda m, a, out, i=i: outputs[i].append(out[0].detach()))
        for i, layer in enumerate(layers)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    positions = torch.zeros(model.config.hidden_size, dtype=torch.int64)
    try:
        with torch.no_grad():
            for ids in texts:
                before = [len(o) for o in outputs]
                model(ids[None])
                new = [x for o, b in zip(outputs, before, strict=True) for x in o[b:]]
                positions += (torch.stack(new).abs() >= threshold).any(0).sum(0)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(o) for o in outputs], positions


def test_injected_outlier_dimensions_are_found_exactly(base, outlier_model, texts):
    """The clean embedded model has none (its projection inputs stay below 5.1); the injected
    model exactly the three dimensions, by the engine and by the direct count."""
    clean = engine.summarize(measure(base, texts), SETTINGS)
    assert clean["outlier_features"] == []
    assert max(clean["absmax"]) < 6.0
    figures = measure(outlier_model, texts)
    assert engine.summarize(figures, SETTINGS)["outlier_features"] == OUTLIER_DIMS
    values, positions = direct(outlier_model, texts)
    layer_hits = torch.stack([(v.abs() >= 6.0).any(0) for v in values])
    assert torch.equal(figures["layer_hits"], layer_hits)
    assert torch.equal(figures["position_hits"], positions)
    assert figures["positions"] == sum(len(ids) for ids in texts) == 4 * 96
    assert stats.outlier_features(layer_hits, positions, 4 * 96, 0.25, 0.06) == OUTLIER_DIMS


def test_a_stricter_threshold_or_share_finds_fewer(outlier_model, texts):
    figures = measure(outlier_model, texts)
    shares = figures["position_hits"][OUTLIER_DIMS].double() / figures["positions"]
    strict = OutlierSettings(max_tokens=96, position_share=float(shares.max()) + 1e-9)
    assert engine.summarize(figures, strict)["outlier_features"] == []
    tight = OutlierSettings(max_tokens=96, threshold=1e6)
    assert engine.summarize(measure(outlier_model, texts, tight), tight)["outlier_features"] == []


def test_absmax_and_kurtosis_match_a_direct_computation(outlier_model, texts):
    """absmax exactly; excess kurtosis of the pooled inputs against scipy (Fisher, biased)."""
    summary = engine.summarize(measure(outlier_model, texts), SETTINGS)
    values, _ = direct(outlier_model, texts)
    for layer, x in enumerate(values):
        assert summary["absmax"][layer] == float(x.abs().max())
        expected = scipy.stats.kurtosis(x.double().flatten().numpy(), fisher=True, bias=True)
        assert summary["kurtosis"][layer] == pytest.approx(expected, rel=1e-9)
        share = float((x.abs() >= 6.0).any(0).double().mean())
        assert summary["dims_above_share"][layer] == share == 3 / 128


def test_weight_kurtosis_matches_scipy(base, texts):
    summary = engine.summarize(measure(base, texts[:1]), SETTINGS)
    for index, layer in enumerate(base.model.layers):
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 7
        kurtosis = [
            scipy.stats.kurtosis(m.weight.detach().double().flatten().numpy()) for m in linears
        ]
        assert summary["weight_kurtosis"][index] == pytest.approx(sum(kurtosis) / 7, rel=1e-9)
        assert summary["weight_kurtosis_max"][index] == pytest.approx(max(kurtosis), rel=1e-9)


def test_smoothing_destroys_the_outlier_features(outlier_model, texts, tokenizer):
    """SmoothQuant folds the ×50 into the weights: the outliers of the reference are destroyed."""
    from qeval_plugins.core.calibration import build_calibration
    from qeval_plugins.quantizers.smoothquant import smooth_model

    smoothed = copy.deepcopy(outlier_model)
    linears = {n: m for n, m in smoothed.named_modules() if isinstance(m, torch.nn.Linear)}
    calibration = dict(calibration_file="bundled", calibration_samples=2, calibration_seqlen=64)
    windows = build_calibration(tokenizer, dict(calibration, calibration_seed=0)).input_ids
    smooth_model(smoothed, linears, windows, 0.5)
    reference = engine.summarize(measure(outlier_model, texts), SETTINGS)
    quantized = engine.summarize(measure(smoothed, texts), SETTINGS)
    metrics = engine.model_metrics(reference, quantized)
    assert metrics["outlier_features_reference"] == metrics["outliers_destroyed"] == 3
    assert metrics["outlier_features_quantized"] == metrics["outliers_created"] == 0
    assert metrics["act_absmax_quantized"] < 6.0 < metrics["act_absmax_reference"]


def test_moments_combine_exactly():
    """Pooled moments from parts equal those of the whole, also far from zero mean."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(1000, generator=generator, dtype=torch.float64) * 3 + 1e4
    b = torch.rand(37, generator=generator, dtype=torch.float64) ** 3 * 50 + 1e4
    pooled = stats.combine(stats.moments(a), stats.moments(b))
    whole = stats.moments(torch.cat([a, b]))
    assert torch.allclose(pooled, whole, rtol=1e-9, atol=0)
    expected = scipy.stats.kurtosis(torch.cat([a, b]).numpy())
    assert stats.excess_kurtosis(pooled) == pytest.approx(expected, rel=1e-9)
    assert stats.excess_kurtosis(stats.moments(torch.full((5,), 2.0))) is None
    assert stats.excess_kurtosis(stats.moments(torch.empty(0))) is None
    assert torch.equal(
        stats.combine(stats.moments(torch.empty(0)), stats.moments(a)), stats.moments(a)
    )


def test_the_criteria_count_shares_inclusively():
    """4 layers, 100 positions: ≥ 1 layer (25 %) and ≥ 6 positions (6 %)."""
    layer_hits = torch.zeros(4, 5, dtype=torch.bool)
    layer_hits[0, :] = True  # every dimension in one layer of four
    layer_hits[1:, 4] = True
    position_hits = torch.tensor([6, 5, 100, 0, 6])
    assert stats.outlier_features(layer_hits, position_hits, 100, 0.25, 0.06) == [0, 2, 4]
    assert stats.outlier_features(layer_hits, position_hits, 100, 0.5, 0.06) == [4]
    assert stats.outlier_features(layer_hits, position_hits, 0, 0.25, 0.06) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": 0}, "'threshold' must be a positive number"),
        ({"threshold": "6"}, "'threshold' must be a positive number"),
        ({"threshold": math.inf}, "'threshold' must be a positive number"),
        ({"layer_share": 1.5}, "'layer_share' must be a share in (0, 1]"),
        ({"position_share": True}, "'position_share' must be a share in (0, 1]"),
        ({"max_tokens": 2.5}, "'max_tokens' must be a positive integer"),
        ({"treshold": 5}, "'treshold' is not known. Did you mean 'threshold'?"),
    ],
)
def test_bad_settings_are_one_line(values, message):
    with pytest.raises(QevalError, match="qeval_outliers setting") as error:
        OutlierSettings.from_mapping(values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_settings_take_integers_and_ignore_other_metadata():
    settings = OutlierSettings.from_mapping({"threshold": 5, "version": 1.0, "pretrained": "x"})
    assert settings == OutlierSettings(threshold=5.0)


def test_a_damaged_cached_reference_is_refused(outlier_model, texts):
    figures = measure(outlier_model, texts[:1])
    engine.check_figures(figures, 96)
    bad = [
        ({**figures, "format": 0}, "format"),
        ({**figures, "positions": 95}, "positions"),
        ({**figures, "absmax": figures["absmax"].float()}, "absmax"),
        ({**figures, "layer_hits": figures["layer_hits"][:, :5]}, "position_hits"),
        ({**figures, "position_hits": figures["position_hits"] + 1000}, "position_hits"),
        ({**figures, "absmax": torch.full_like(figures["absmax"], float("nan"))}, "absmax"),
        ({**figures, "weight_kurtosis": "x"}, "weight_kurtosis"),
        ([], "format"),
    ]
    for damaged, where in bad:
        with pytest.raises(ValueError, match=where):
            engine.check_figures(damaged, 96)


def test_lm_eval_run_with_rtn_3_bits(tasks_dir, base, tokenizer, tmp_path):
    """End to end through lm-eval: metrics, the per-layer block (the reference's figures equal a
    direct computation on the float model), no direction, and the report's section."""
    from lm_eval.tasks import TaskManager
    from rich.console import Console

    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.data import report_data
    from qeval_plugins.report.load import load_runs
    from qeval_plugins.report.render import render

    assert "qeval_outliers" in TaskManager(include_path=str(tasks_dir)).all_tasks
    results = evaluate(
        "pretrained=qeval-tiny,quantizer=rtn,bits=3",
        ["qeval_outliers"],
        tasks_dir,
        limit=2,
        metadata={"max_tokens": 40},
    )
    metrics = {
        key.split(",")[0]: value
        for key, value in results["results"]["qeval_outliers"].items()
        if key.endswith(",none") and "_stderr" not in key
    }
    block = results["config"]["qeval"]["outliers"]
    assert set(results["higher_is_better"]["qeval_outliers"].values()) == {None}
    # the sample log never shows a model-level figure as a per-document number (paired tests)
    samples = results["samples"]["qeval_outliers"]
    assert samples and all(
        sample["act_absmax_quantized"] == {"run": metrics["act_absmax_quantized"]}
        for sample in samples
    )
    assert block["settings"] == {
        "max_tokens": 40,
        "threshold": 6.0,
        "layer_share": 0.25,
        "position_share": 0.06,
    }
    assert block["positions"] == 2 * 41 and block["hidden_size"] == 128
    assert metrics["outlier_features_reference"] == metrics["outlier_features_quantized"] == 0
    assert metrics["outliers_created"] == metrics["outliers_destroyed"] == 0
    reference, quantized = block["reference"], block["quantized"]
    assert metrics["act_absmax_reference"] == max(reference["absmax"])
    assert (
        metrics["act_absmax_quantized"]
        == max(quantized["absmax"])
        != metrics["act_absmax_reference"]
    )
    assert metrics["weight_kurtosis_quantized"] != metrics["weight_kurtosis_reference"]
    lines = (tasks_dir / "qeval_sqnr" / "passages.jsonl").read_text().splitlines()[:2]
    texts = [
        torch.tensor(
            [tokenizer.bos_token_id, *tokenizer(json.loads(line)["text"])["input_ids"][:40]]
        )
        for line in lines
    ]
    values, _ = direct(base, texts)
    assert reference["absmax"] == [float(v.abs().max()) for v in values]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results, default=str))
    runs, warnings = load_runs([path])
    report = compare(runs, warnings=warnings)
    (data,) = report_data(report)["models"][0]["outliers"]
    assert data["label"] == "rtn:bits=3" and data["metrics"]["outliers_created"] == 0
    console = Console(width=160, record=True, color_system=None)
    render(report, console)
    assert "outlier features, unquantized reference vs quantized" in console.export_text()


def test_the_metrics_have_no_direction():
    """Descriptive figures: lm-eval gets None, and the report never calls a change worse."""
    from qeval_plugins.evals.outliers import task
    from qeval_plugins.metrics.directions import direction

    assert dict.fromkeys(task.METRICS) == task.HIGHER_IS_BETTER
    assert set(task.AGGREGATIONS) == set(task.METRICS)
    assert all(direction(metric) is None for metric in task.METRICS)


def test_a_missing_text_file_names_this_task(tmp_path):
    from qeval_plugins.evals.outliers.task import load_texts

    with pytest.raises(QevalError, match=r"^qeval_outliers text_file .* does not exist"):
        load_texts(text_file=str(tmp_path / "missing.jsonl"))
    assert len(load_texts()["test"]) == 40


def test_linears_it_cannot_recognise_are_one_line_not_empty_figures(base, texts):
    model = copy.deepcopy(base)
    for module in model.model.layers[1].modules():
        if isinstance(module, torch.nn.Linear):
            del module.in_features
    with pytest.raises(QevalError, match=r"read no hidden state in decoder layer 1: .*Linear"):
        measure(model, texts[:1])


def test_a_model_without_decoder_layers_is_one_line(base, texts):
    model = copy.deepcopy(base)
    model.config.num_hidden_layers = 99  # no ModuleList of that length
    with pytest.raises(QevalError, match="found no decoder layers in LlamaForCausalLM"):
        measure(model, texts[:1])
