"""The layer-sensitivity scan: a layer made fragile ranks first (per layer and per block), the
scan leaves the model's weights as they were, the recommendation rule, and its refusals."""

from __future__ import annotations

import copy

import pytest
import torch

from qeval_plugins import LoadContext, QevalError
from qeval_plugins.core.plan import check_spec
from qeval_plugins.core.quantizer import bits_per_param
from qeval_plugins.evals.scan import engine
from qeval_plugins.evals.scan.recommend import recommend
from qeval_plugins.evals.scan.runner import ScanRequest, checked_plan, run_scan

FRAGILE = "model.layers.2.mlp.down_proj"  # a late layer: unharmed by rtn int4 per channel
SPEC = "rtn:bits=4:group_size=0"


def make_fragile(weight: torch.Tensor) -> None:
    """One outlier per output row, 20× the row's largest weight: per-channel int4 then has a
    step of ~2.9× that largest weight, so every other weight of the row rounds to 0."""
    rows = torch.arange(weight.shape[0])
    weight[rows, rows % weight.shape[1]] = 20 * weight.abs().amax(dim=1)


@pytest.fixture(scope="module")
def fragile_dir(base, tokenizer, tmp_path_factory):
    model = copy.deepcopy(base)
    with torch.no_grad():
        make_fragile(model.get_submodule(FRAGILE).weight.data)
    folder = tmp_path_factory.mktemp("fragile")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scans(fragile_dir):
    return {
        unit: run_scan(ScanRequest(str(fragile_dir), SPEC, unit=unit, limit=2, max_tokens=64))
        for unit in ("layer", "block")
    }


def _single_unit_kl(model, tokenizer, layer: str) -> float:
    """KL of ``model`` with only ``layer`` quantized by SPEC, through the engine."""
    texts = engine.load_texts(tokenizer, 2, 64)
    reference = engine.reference_pass(model, texts, 32)
    plan = check_spec(SPEC, "cpu")
    quantized = engine.quantized_model(model, plan, LoadContext(dtype="float32"), None)
    weights = engine.quantized_weights(model, quantized)
    [unit] = [u for u in engine.make_units(model, weights, "layer") if u.name == layer]
    return engine.measure_unit(model, unit, reference).kl_mean


def test_layer_scan_ranks_the_fragile_layer_first_by_far(scans, base, tokenizer):
    units = scans["layer"]["units"]
    assert len(units) == 28 and [u["rank"] for u in units] == list(range(1, 29))
    assert units[0]["name"] == FRAGILE
    assert units[0]["kl_mean"] > 3 * units[1]["kl_mean"]
    # the same layer of the untouched model is nowhere near: the outliers made it fragile
    assert _single_unit_kl(base, tokenizer, FRAGILE) < units[0]["kl_mean"] / 10


def test_block_scan_ranks_the_fragile_block_first(scans):
    units = scans["block"]["units"]
    assert units[0]["name"] == "model.layers.2"
    # q, o 128×128; k, v 64×128 (2 KV heads); gate, up, down 128×384
    assert len(units) == 4 and all(u["params"] == 196_608 for u in units)
    assert units[0]["layers"][-1] == FRAGILE


@pytest.mark.parametrize("unit", ["layer", "block"])
def test_recommendation_keeps_the_fragile_unit_and_verifies(scans, unit):
    result = scans[unit]
    advice, checks = result["recommendation"], result["verification"]
    assert advice["units"] == [result["units"][0]["name"]]
    assert advice["skip"] == result["units"][0]["name"]
    assert checks["recommended"]["kl_mean"] < checks["all_quantized"]["kl_mean"] / 2
    assert checks["recommended"]["kl_mean"] < checks["least_sensitive"]["kl_mean"]
    assert checks["improves"] is True and checks["beats_least_sensitive"] is True
    params = {u["name"]: u["params"] for u in result["units"]}
    expected = bits_per_param(params, advice["units"], 4.0, 32.0)
    assert advice["bits_per_param"] == pytest.approx(expected)
    assert checks["recommended"]["bits_per_param"] == pytest.approx(expected)


def test_reference_info_and_the_scan_leaves_weights_unchanged(base, tokenizer):
    model = copy.deepcopy(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = engine.load_texts(tokenizer, 2, 64)
    reference = engine.reference_pass(model, texts, 32)
    assert reference.tokens == sum(len(t) - 1 for t in texts)
    unchanged = engine.measure(model, reference)
    assert unchanged.kl_mean == pytest.approx(0.0, abs=1e-6)
    assert unchanged.delta_nll == pytest.approx(0.0, abs=1e-9)
    assert unchanged.top1_agreement == 1.0
    quantized = engine.quantized_model(
        model, check_spec(SPEC, "cpu"), LoadContext(dtype="float32"), None
    )
    for unit in engine.make_units(model, engine.quantized_weights(model, quantized), "block"):
        engine.measure_unit(model, unit, reference)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


RANKING = [  # most sensitive first; params in weights
    {"name": "a", "params": 100, "kl_mean": 0.6},
    {"name": "b", "params": 300, "kl_mean": 0.3},
    {"name": "c", "params": 100, "kl_mean": 0.2},
    {"name": "d", "params": 500, "kl_mean": 0.1},
]


def test_default_rule_keeps_the_fewest_units_holding_half_the_kl():
    advice = recommend(RANKING, 4.0, 16.0)
    assert advice["units"] == ["a"]  # 0.6 >= 0.5 · 1.2
    # (100·16 + 900·4) / 1000 = 5.2 bits per quantized-layer weight
    assert advice["bits_per_param"] == pytest.approx(5.2)
    flat = [{**unit, "kl_mean": 0.25} for unit in RANKING]
    assert recommend(flat, 4.0, 16.0)["units"] == ["a", "b"]
    assert recommend([{**u, "kl_mean": 0.0} for u in RANKING], 4.0, 16.0)["units"] == []


def test_target_bits_passes_over_a_unit_too_large_for_the_budget():
    # a: 5.2 bits; a+b: 8.8 > 6; a+c: 6.4 > 6 ... with 6.5: a, then c (b is too large)
    assert recommend(RANKING, 4.0, 16.0, target_bits=6.5)["units"] == ["a", "c"]
    assert recommend(RANKING, 4.0, 16.0, target_bits=5.0)["units"] == []
    with pytest.raises(QevalError, match="below the quantizer's own 4 bits"):
        recommend(RANKING, 4.0, 16.0, target_bits=3.0)
    with pytest.raises(QevalError, match="does not state them"):
        recommend(RANKING, None, 16.0, target_bits=6.0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rtn:skip=layers.0", "qeval scan chooses skip= itself"),
        ("none", "quantizer 'none' changes no weight"),
        ("rtn:act_format=int", "also quantizes activations"),
    ],
)
def test_specs_the_scan_cannot_verify_are_one_line(spec, message):
    with pytest.raises(QevalError, match=message) as caught:
        checked_plan(spec, "cpu")
    assert "\n" not in str(caught.value)


def test_a_unit_that_breaks_the_numbers_ranks_first_and_is_kept():
    from qeval_plugins.evals.scan.runner import rank

    rows = [{**unit, "delta_nll": 0.0} for unit in RANKING]
    rows[3] = {**rows[3], "kl_mean": float("nan")}
    ranked = rank(rows)
    assert [row["name"] for row in ranked] == ["d", "a", "b", "c"]
    assert [row["rank"] for row in ranked] == [1, 2, 3, 4]
    assert recommend(ranked, 4.0, 16.0)["units"] == ["d", "a"]  # then a: 0.6 >= half of 1.1
