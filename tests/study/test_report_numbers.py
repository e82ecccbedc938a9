"""Every number the seed-study report quotes is the one in the file it names.

Checked on the committed report (``reports/seed-study``) and on a report written from small
synthetic runs folders."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from qeval_plugins.study import plan as P
from qeval_plugins.study.ledger import OPS, lookup, number_text
from qeval_plugins.study.report_writer import write_report
from qeval_plugins.study.runner import Prepared, StudySettings
from qeval_plugins.sweep.planning import slug

COMMITTED = Path(__file__).resolve().parents[2] / "reports" / "seed-study"


def check_report(folder: Path) -> list[dict]:
    """Assert that numbers.json's raw numbers equal their files' values, derived ones their
    recomputation, and that every quoted one appears in README.md; returns the entries."""
    readme = (folder / "README.md").read_text()
    entries = json.loads((folder / "numbers.json").read_text())["numbers"]
    by_id = {entry["id"]: entry for entry in entries}
    for entry in entries:
        if "file" in entry:
            source = folder / entry["file"]
            assert source.is_file(), entry
            assert lookup(json.loads(source.read_text()), entry["key"]) == entry["value"], entry
        else:
            values = [by_id[i]["value"] for i in entry["inputs"]]
            assert math.isclose(OPS[entry["op"]](values), entry["value"], abs_tol=1e-12), entry
        assert entry["text"] == number_text(entry["value"])
        if entry["quoted"]:
            assert entry["text"] in readme, entry
    return entries


def test_the_committed_report_quotes_the_numbers_of_its_results_files():
    if not (COMMITTED / "numbers.json").is_file():
        pytest.skip("reports/seed-study/numbers.json is not committed yet (run `qeval study`)")
    entries = check_report(COMMITTED)
    assert any(entry["quoted"] for entry in entries)


def synthetic_study(root: Path) -> tuple[StudySettings, Prepared]:
    """A runs folder of 2 sizes x 2 seeds, 6 recipes and their early checkpoints, with made-up
    but plausible numbers, plus predictor.json, speed.json and a family."""
    rng = random.Random(7)

    class Member:
        def __init__(self, size, recipe, seed):
            self.size = type("S", (), {"name": size})
            self.recipe = type("R", (), {"name": recipe})
            self.seed = seed
            self.name = f"{recipe}-{size}-seed{seed}"

    recipes = ("base", "wd0.1", "dropout0.1", "clip1.0", "bf16", "fp16")
    members = [Member(size, "base", seed) for size in ("xs", "s") for seed in (1, 2)]
    members += [Member("s", r, seed) for r in recipes[1:] for seed in (1, 2)]
    models = P.family_models(members)
    plan = P.build_plan(models, passages="held.jsonl", prompts="prompts.jsonl")
    runs = root / "runs"
    for part, model, spec in plan.runs():
        folder = runs / part / f"{slug(model)}__{slug(spec)}"
        folder.mkdir(parents=True)
        bits = 8 if "8" in spec else 3 if "3" in spec else 4
        data = {
            "results": {
                "qeval_outliers": {
                    "outlier_features_reference,none": rng.randint(0, 3),
                    "act_absmax_reference,none": rng.uniform(3, 9),
                    "act_kurtosis_reference,none": rng.uniform(0, 5),
                }
            },
            "config": {"qeval": {"sqnr": {"metrics": {
                "ln_ppl_ratio": 2.0 ** -bits * rng.uniform(0.8, 1.2)}}}},
        }  # fmt: skip
        if part == P.TEMPERATURE:
            data["results"] = {
                f"qeval_temperature_{t}": {"rougeL,none": 0.5 - float(t) * rng.uniform(0.1, 0.3)}
                for t in ("0.0", "0.2", "0.5", "0.8", "1.0", "1.2")
            }
            data["results"]["qeval_temperature_summary"] = {"rougeL_gap,none": rng.random() / 10}
        (folder / "results.json").write_text(json.dumps(data))
    validation = {
        scheme: {m: {"mae": rng.random() / 50, "rmse": rng.random() / 40}
                 for m in ("forest", "linear_sqnr", "noise_equivalent")}
        for scheme in ("leave_one_model_out", "leave_one_family_out")
    }  # fmt: skip
    predictor = {"format": "qeval-predictor", "version": 1, "target": "delta_nll",
                 "validation": validation}  # fmt: skip
    (root / "predictor.json").write_text(json.dumps(predictor))
    speed_rows = [
        {"label": label, "spec": spec, "dtype": dtype,
         "seconds": [rng.uniform(0.5, 2) for _ in range(3)]}
        for label, spec, dtype in (("none float32", "none", "float32"),
                                   ("none bfloat16", "none", "bfloat16"),
                                   ("bnb-int8", "bnb-int8", "float32"))
    ]  # fmt: skip
    for row in speed_rows:
        row["tokens_per_second"] = 64 / sorted(row["seconds"])[1]
    speed = {"model": "base-s-seed1", "device": "cpu", "new_tokens": 64, "rows": speed_rows}
    (root / "speed.json").write_text(json.dumps(speed))
    family = {
        m.name: {"steps": 400, "non_embedding_params": 1234, "train_loss": rng.uniform(1, 2),
                 "held_out_loss": rng.uniform(1, 2), "seconds": rng.uniform(10, 60)}
        for m in models
    }  # fmt: skip
    settings = StudySettings(output=root, sizes=("xs", "s"), seeds=(1, 2))
    return settings, Prepared(plan, {m.name: m.name for m in models}, family)


def test_a_report_from_synthetic_runs_quotes_exactly_their_numbers(tmp_path):
    settings, prepared = synthetic_study(tmp_path)
    readme = write_report(settings, prepared)
    entries = check_report(tmp_path)
    text = readme.read_text()
    quoted_files = {e["file"] for e in entries if "file" in e}
    assert any(f.startswith("runs/divergence/") for f in quoted_files)
    assert any(f.startswith("runs/temperature/") for f in quoted_files)
    assert {"predictor.json", "speed.json", "family.json"} <= quoted_files
    for claim in ("higher weight decay", "nf4 ≈ fp4", "early checkpoints", "non-monotonic",
                  "bf16 is fastest", "CPU"):  # fmt: skip
        assert claim in text
    assert "no GPU was lent" in text
    # a number changed in a results file no longer matches the committed numbers.json
    entry = next(e for e in entries if e.get("file", "").startswith("runs/divergence/"))
    source = tmp_path / entry["file"]
    data = json.loads(source.read_text())
    data["config"]["qeval"]["sqnr"]["metrics"]["ln_ppl_ratio"] += 1.0
    source.write_text(json.dumps(data))
    with pytest.raises(AssertionError):
        check_report(tmp_path)
