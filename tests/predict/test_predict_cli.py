"""``qeval predict fit`` and ``qeval predict`` end to end on the embedded model's real runs.

``data/qeval-tiny/rtn-bits{3,4,8}/results.json`` are the results of
``qeval run --model qeval-tiny --quantizers rtn:bits=4,rtn:bits=3,rtn:bits=8 --tasks qeval_sqnr
--limit 4``. A second "family" is the same checkpoint copied with ``qeval_family.recipe`` set in
its config.json, and the same runs pointed at it (same weights, so the same ΔNLL).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from qeval_plugins.cli.main import main
from qeval_plugins.predict.predictor_file import read_predictor
from qeval_plugins.report.load import NON_METRIC_KEYS

DATA = Path(__file__).resolve().parent / "data" / "qeval-tiny"
pytestmark = pytest.mark.slow


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two run folders: qeval-tiny's three runs, and the same runs of a copy of it in another
    family."""
    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    root = tmp_path_factory.mktemp("predict")
    model = root / "models" / "tiny-wd"
    shutil.copytree(EMBEDDED_MODELS["qeval-tiny"], model)
    _rewrite(model / "config.json", lambda c: c.update(qeval_family={"recipe": "wd0.1"}))
    first, second = root / "runs-tiny", root / "runs-wd"
    shutil.copytree(DATA, first)
    shutil.copytree(DATA, second)
    for results in second.rglob("results.json"):
        _rewrite(results, lambda d: d["config"]["model_args"].update(pretrained=str(model)))
    return first, second


@pytest.fixture(scope="module")
def fitted(runs, tmp_path_factory) -> tuple[Path, str]:
    """The predictor file ``qeval predict fit`` wrote on both run folders, and what it printed."""
    path = tmp_path_factory.mktemp("out") / "predictor.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["predict", "fit", str(runs[0]), str(runs[1]), "--out", str(path)])
    assert status == 0
    return path, printed.getvalue()


@pytest.fixture(scope="module")
def predictor_path(fitted) -> Path:
    return fitted[0]


def _targets() -> dict[str, float]:
    return {
        folder.name: json.loads((folder / "results.json").read_text())["config"]["qeval"]["sqnr"][
            "metrics"
        ]["ln_ppl_ratio"]
        for folder in DATA.iterdir()
    }


def test_fit_writes_a_validated_predictor(predictor_path):
    predictor = read_predictor(predictor_path)
    assert predictor.rows == 6 and predictor.target == "delta_nll"
    assert predictor.families == ["llama", "wd0.1"]
    for split in ("leave_one_model_out", "leave_one_family_out"):
        scores = predictor.validation[split]
        assert set(scores) == {"forest", "linear_sqnr", "noise_equivalent"}
        assert all(score["rmse"] >= score["mae"] >= 0 for score in scores.values())
    # the copy has the same weights and targets: holding one out, the other predicts it well
    targets = list(_targets().values())
    spread = max(targets) - min(targets)
    assert predictor.validation["leave_one_model_out"]["forest"]["mae"] < 0.5 * spread
    low, high = predictor.training_range["weight_sqnr_global_db"]
    assert 10 < low < 12 and 43 < high < 45  # rtn int3 and int8 g128 on qeval-tiny


def test_fit_prints_the_three_predictors_per_split(fitted):
    out = fitted[1]
    assert "6 rows: 2 models, 2 families (llama, wd0.1)" in out
    for name in ("forest (200 trees)", "linear on SQNR", "noise-equivalent ΔNLL"):
        assert out.count(name) == 2


def test_predict_on_a_trained_model(predictor_path, capsys):
    specs = "rtn:bits=3,rtn:bits=4,rtn:bits=8"
    assert (
        main(["predict", "qeval-tiny", "--quantizers", specs, "--predictor", str(predictor_path)])
        == 0
    )
    out = capsys.readouterr().out
    targets = _targets()
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("rtn:")}
    assert set(lines) == set(specs.split(","))
    low, high = min(targets.values()), max(targets.values())
    for words in lines.values():
        assert low - 1e-9 <= float(words[3]) <= high + 1e-9  # a forest averages training leaves
        assert "outside" not in " ".join(words)
    # the int3 row has the most damaged target: its forecast is the most negative/positive alike
    order = sorted(lines, key=lambda spec: float(lines[spec][3]))
    expected = sorted(lines, key=lambda spec: targets[spec.replace("rtn:bits=", "rtn-bits")])
    assert order == expected
    assert "family llama" in out
    assert "ratio" in out.splitlines()[-1]  # every spec has training runs


def test_predict_on_an_unseen_model_flags_the_range(predictor_path, tiny_model_dir, capsys):
    args = ["predict", str(tiny_model_dir), "--quantizers", "rtn:bits=2,bnb-nf4"]
    assert main([*args, "--predictor", str(predictor_path)]) == 0
    out = capsys.readouterr().out
    assert "model outside the training range: log10_params" in out
    nf4 = next(line for line in out.splitlines() if line.startswith("bnb-nf4"))
    assert "nf4 b64" in nf4 and "outside training range: element_kind" in nf4
    assert "no training run recorded the evaluation time of bnb-nf4" in out


def test_runs_without_qeval_sqnr_are_refused_naming_it(runs, tmp_path, capsys):
    folder = tmp_path / "no-sqnr"
    shutil.copytree(runs[0] / "rtn-bits4", folder)

    def strip(data):
        data["results"]["qeval_sqnr"] = {"alias": "qeval_sqnr", "other,none": 1.0}
        del data["config"]["qeval"]["sqnr"]

    _rewrite(folder / "results.json", strip)
    status = main(["predict", "fit", str(folder), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert "no qeval_sqnr ΔNLL (config.qeval.sqnr.metrics.ln_ppl_ratio)" in err[0]
    assert err[0].startswith("qeval: error: ") and "--tasks qeval_sqnr" in err[0]


def test_fit_refusals_are_one_line(runs, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "p.json")
    cases = [
        (["predict", "fit", str(runs[0]), "--out", out, "--target", "gptq"], "no run used"),
        (["predict", "fit", str(tmp_path), "--out", out], "no lm-eval results files"),
        (["predict", "fit", str(runs[0])], "needs --out"),
        (["predict", "fit", str(runs[0]), "--out", str(tmp_path / "no" / "p.json")], "create it"),
        (["predict", "a", "b", "--predictor", out, "--quantizers", "rtn"], "one MODEL"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert main(["predict", "fit", str(runs[0]), "--out", out]) == 2
    assert "pip install 'qeval[predict]'" in capsys.readouterr().err


def test_a_quantizer_or_a_task_as_the_target(runs, tmp_path):
    out = tmp_path / "p.json"
    folders = [str(folder) for folder in runs]
    assert main(["predict", "fit", *folders, "--out", str(out), "--target", "rtn"]) == 0
    predictor = read_predictor(out)
    assert (predictor.target, predictor.rows) == ("rtn", 6)
    assert predictor.target_label == "ΔNLL of rtn on qeval_sqnr (nats/token)"
    assert main(["predict", "fit", *folders, "--out", str(out), "--target", "qeval_sqnr"]) == 0
    results = json.loads((DATA / "rtn-bits4" / "results.json").read_text())["results"]
    names = [key.partition(",")[0] for key in results["qeval_sqnr"]]
    first = next(name for name in names if name not in NON_METRIC_KEYS and "_stderr" not in name)
    assert read_predictor(out).target_label == f"qeval_sqnr/{first}"


def test_runs_whose_spec_changes_more_than_the_weights_are_left_out_by_name(runs, tmp_path):
    """A W8A8 run would get the features of its weight-only twin: fit leaves it out, saying so."""
    from qeval_plugins.predict.rows import read_runs, resolve_target, training_rows

    folder = tmp_path / "w4a8"
    shutil.copytree(runs[0] / "rtn-bits4", folder)
    _rewrite(folder / "results.json", lambda d: d["config"]["qeval"]["options"].update(
        act_format="int"))  # fmt: skip
    found, _ = read_runs([runs[0], folder])
    rows, left_out = training_rows(found, resolve_target("delta_nll", found))
    assert len(rows) == 3 and all(folder not in row.path.parents for row in rows)
    assert left_out == [
        f"{folder / 'results.json'} left out: spec 'rtn:bits=4': qeval predict's features "
        "describe the linear layers' weights only, not act_format=int (activation quantization)"
    ]
