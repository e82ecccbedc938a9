"""The predictor file: a round trip, and hostile or damaged files as one error line."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from qeval_plugins.cli.main import main
from qeval_plugins.core.errors import QevalError
from qeval_plugins.predict.features import FEATURES
from qeval_plugins.predict.forest import MAX_NODES, MAX_TREES, fit_forest
from qeval_plugins.predict.predicting import evaluation_estimate
from qeval_plugins.predict.predictor_file import Predictor, read_predictor, write_predictor


def make_predictor() -> Predictor:
    """A small sound predictor: 5 trees on 30 random rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, len(FEATURES)))
    y = x[:, 2] ** 2
    return Predictor(
        target="delta_nll",
        target_label="ΔNLL on qeval_sqnr (nats/token)",
        features=FEATURES,
        forest=fit_forest(x, y, trees=5),
        training_range={
            name: (float(x[:, i].min()), float(x[:, i].max())) for i, name in enumerate(FEATURES)
        },
        rows=30,
        models=["a", "b"],
        families=["llama"],
        baselines={"linear_sqnr": (0.5, -0.01)},
        validation={"leave_one_model_out": None, "leave_one_family_out": None},
        costs=[
            {"spec": "rtn:bits=4", "quantizer": "rtn", "params": 1e6, "seconds": 30.0},
            {"spec": "rtn:bits=8", "quantizer": "rtn", "params": 1e6, "seconds": 50.0},
        ],
        texts={"file": None, "sha256": "0" * 64},
    )


PREDICTOR = make_predictor()


@pytest.fixture
def predictor() -> Predictor:
    return PREDICTOR


def test_round_trip_keeps_every_prediction(tmp_path, predictor):
    path = tmp_path / "p.json"
    write_predictor(path, predictor)
    again = read_predictor(path)
    probe = np.random.default_rng(1).normal(size=(50, len(FEATURES)))
    assert np.array_equal(again.forest.predict(probe), predictor.forest.predict(probe))
    assert again.training_range == predictor.training_range
    assert again.costs == predictor.costs and again.rows == 30
    assert json.loads(path.read_text())["format"] == "qeval-predictor"


def test_evaluation_cost_comes_from_the_same_spec_else_its_quantizer(predictor):
    # seconds × the parameter ratio; the median over the runs that match
    assert evaluation_estimate(predictor, "rtn:bits=8", "rtn", 2e6) == (100.0, 1)
    assert evaluation_estimate(predictor, "rtn:bits=3", "rtn", 1e6) == (40.0, 2)
    assert evaluation_estimate(predictor, "gptq", "gptq", 1e6) == (None, 0)


def _valid(predictor) -> dict:
    return json.loads(json.dumps(predictor.to_json()))


def _tree(data: dict) -> dict:
    return data["trees"][0]


def _inner(tree: dict) -> int:
    return next(i for i, left in enumerate(tree["left"]) if left != -1)


def _mutations(predictor):
    """(name, bytes of a hostile file, words its error must contain)."""
    good = json.dumps(predictor.to_json()).encode()
    yield "truncated", good[: len(good) // 2], "not valid JSON"
    yield "empty", b"", "not valid JSON"
    yield "pickle", pickle.dumps(predictor.to_json()), "not a text file"
    yield "other json", b'{"a": 1}', "not a qeval predictor"
    yield "a list", b"[1, 2]", "not a qeval predictor"
    deep = b"[" * 100_000 + b"]" * 100_000
    yield "deep", deep, "predictor file"

    def changed(edit, words):
        data = _valid(predictor)
        edit(data)
        return json.dumps(data).encode(), words

    cases = {
        "version": (lambda d: d.update(version=2), "version 2"),
        "rows text": (lambda d: d.update(rows="30"), "'rows' must be a positive integer"),
        "features": (lambda d: d.update(features="abc"), "'features' must be a list"),
        "no trees": (lambda d: d.update(trees=[]), "'trees' must be a non-empty list"),
        "tree keys": (lambda d: _tree(d).pop("value"), "exactly the keys"),
        "left text": (lambda d: _tree(d)["left"].__setitem__(0, "1"), "'left' must hold integers"),
        "bool": (
            lambda d: _tree(d)["feature"].__setitem__(0, True),
            "'feature' must hold integers",
        ),
        "lengths": (lambda d: _tree(d)["value"].append(1.0), "one equal length"),
        "cycle": (
            lambda d: _tree(d)["left"].__setitem__(_inner(_tree(d)), _inner(_tree(d))),
            "left child index is out of range",
        ),
        "child range": (
            lambda d: _tree(d)["right"].__setitem__(0, 10**6),
            "right child index is out of range",
        ),
        "one child": (
            lambda d: _tree(d)["right"].__setitem__(_tree(d)["left"].index(-1), 1),
            "a node has one child",
        ),
        "feature range": (
            lambda d: _tree(d)["feature"].__setitem__(0, len(FEATURES)),
            "split feature is out of range",
        ),
        "huge tree": (
            lambda d: _tree(d).update({k: [0] * (MAX_NODES + 1) for k in _tree(d)}),
            "one equal length",
        ),
        "many trees": (lambda d: d.update(trees=d["trees"] * (MAX_TREES + 1)), "more than"),
        "range": (lambda d: d["training_range"].pop(FEATURES[0]), "training_range."),
        "inverted range": (
            lambda d: d["training_range"].update({FEATURES[0]: [1.0, 0.0]}),
            "minimum above maximum",
        ),
        "big integer": (lambda d: _tree(d)["value"].__setitem__(0, 10**400), "finite numbers"),
        "cost": (lambda d: d["costs"][0].update(seconds="30"), "costs[].seconds"),
    }
    for name, (edit, words) in cases.items():
        yield name, *changed(edit, words)
    nan = good.replace(b'"value": [', b'"value": [NaN, ', 1)
    yield "nan", nan, "holds NaN"
    yield "infinity", good.replace(b'"rows": 30', b'"rows": Infinity'), "holds Infinity"


@pytest.mark.parametrize(
    ("raw", "words"),
    [pytest.param(raw, words, id=name) for name, raw, words in _mutations(PREDICTOR)],
)
def test_hostile_files_are_one_line(tmp_path, capsys, raw, words):
    path = tmp_path / "p.json"
    path.write_bytes(raw)
    with pytest.raises(QevalError) as caught:
        read_predictor(path)
    message = str(caught.value)
    assert words in message, message
    assert "\n" not in message and message.startswith(f"predictor file {path}")
    status = main(["predict", "qeval-tiny", "--quantizers", "rtn", "--predictor", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("qeval: error: predictor file")
    assert "Traceback" not in err


def test_fifo_and_missing_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(QevalError, match="not a regular file"):
        read_predictor(fifo)
    with pytest.raises(QevalError, match="cannot read"):
        read_predictor(tmp_path / "missing.json")
