"""The forest on synthetic rows with a known relationship, the leave-one-out splits, and the
JSON trees against scikit-learn's own predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qeval_plugins.predict.features import FEATURES
from qeval_plugins.predict.forest import fit_forest, fit_sklearn, forest_from_json, from_sklearn
from qeval_plugins.predict.validation import errors, folds, leave_one_group_out, linear_fit

SQNR = FEATURES.index("weight_sqnr_global_db")
PARAMS = FEATURES.index("log10_params")


def synthetic_rows(models: int = 10, specs: int = 6, seed: int = 0):
    """Rows of ``models`` models × ``specs`` formats whose target is a known function:
    ΔNLL = 3·exp(−SQNR/6) · (1 + (7 − log10 params)), every other feature noise."""
    rng = np.random.default_rng(seed)
    rows, groups = [], []
    for model in range(models):
        log10_params = rng.uniform(6.0, 8.0)
        for _ in range(specs):
            row = rng.normal(size=len(FEATURES))
            row[PARAMS] = log10_params
            row[SQNR] = rng.uniform(5.0, 40.0)
            rows.append(row)
            groups.append(f"model-{model}")
    x = np.asarray(rows)
    y = 3.0 * np.exp(-x[:, SQNR] / 6.0) * (1.0 + (7.0 - x[:, PARAMS]))
    return x, y, groups


def test_the_forest_recovers_a_known_relationship_on_unseen_models():
    x, y, groups = synthetic_rows()
    scores = leave_one_group_out(x, y, groups, FEATURES, lambda a, b: fit_forest(a, b, trees=50))
    constant = []  # predicting the training folds' mean
    for _, train, test in folds(groups):
        constant.extend(np.mean(y[train]) - y[test])
    constant_mae = float(np.mean(np.abs(constant)))
    assert scores["forest"]["mae"] < 0.35 * constant_mae
    assert scores["forest"]["mae"] < 0.1 * np.ptp(y)
    # a line in SQNR cannot follow an exponential: the forest earns its keep here
    assert scores["forest"]["mae"] < scores["linear_sqnr"]["mae"]
    assert scores["forest"]["rmse"] >= scores["forest"]["mae"]


def test_leave_one_out_folds_never_train_on_the_held_out_group():
    _, _, groups = synthetic_rows(models=5, specs=3)
    labels = np.asarray(groups)
    seen = []
    for held_out, train, test in folds(groups):
        seen.append(held_out)
        assert held_out not in set(labels[train])
        assert set(labels[test]) == {held_out}
        assert sorted([*train, *test]) == list(range(len(groups)))
    assert seen == [f"model-{i}" for i in range(5)]


def test_validation_fits_only_on_training_folds():
    x, y, groups = synthetic_rows(models=4, specs=3)
    fitted_on = []

    class Recorder:
        def __init__(self, train_x):
            fitted_on.append({tuple(row) for row in train_x})

        def predict(self, rows):
            assert not {tuple(row) for row in rows} & fitted_on[-1]
            return np.zeros(len(rows))

    leave_one_group_out(x, y, groups, FEATURES, lambda a, b: Recorder(a))
    assert len(fitted_on) == 4


def test_fewer_than_two_groups_are_not_validated():
    x, y, _ = synthetic_rows(models=1, specs=4)
    assert leave_one_group_out(x, y, ["one"] * 4, FEATURES) is None


def test_json_trees_predict_exactly_what_sklearn_predicts():
    x, y, _ = synthetic_rows(models=6, specs=5, seed=1)
    model = fit_sklearn(x, y, seed=3, trees=25)
    data = json.loads(json.dumps(from_sklearn(model).to_json()))
    forest = forest_from_json(data, len(FEATURES))
    probe = np.vstack([x, np.random.default_rng(2).normal(scale=10.0, size=(200, len(FEATURES)))])
    assert np.array_equal(forest.predict(probe), model.predict(probe))
    per_tree = np.stack([tree.predict(probe) for tree in model.estimators_])
    assert np.allclose(forest.spread(probe), per_tree.std(axis=0), rtol=0, atol=1e-12)


def test_linear_fit_and_errors_by_hand():
    assert linear_fit(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])) == pytest.approx(
        (1.0, 2.0)
    )
    assert linear_fit(np.array([4.0, 4.0]), np.array([1.0, 3.0])) == (2.0, 0.0)
    assert errors(np.array([1.0, 2.0]), np.array([0.0, 4.0])) == pytest.approx(
        {"mae": 1.5, "rmse": np.sqrt(2.5)}
    )
