"""How well a predictor would do on a model, or a family, it never saw.

Leave-one-group-out: for each group (a model's folder, or a family) every predictor is fitted
on the rows of the other groups and predicts the held-out group's rows; the errors pool every
held-out prediction: mean absolute error MAE = mean|ŷ − y| and RMSE = √mean((ŷ − y)²), in the
target's units. Three predictors side by side, so a user sees whether the forest earns its
keep on their data:

* ``forest``: the random forest on every feature (:mod:`.forest`);
* ``linear_sqnr``: y = a + b · ``weight_sqnr_global_db`` (least squares);
* ``noise_equivalent``: y = a + b · ``noise_equivalent_dnll`` (least squares; for the default
  target a calibrated version of "the ΔNLL equals the noise-equivalent ΔNLL").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from qeval_plugins.predict.forest import fit_forest

PREDICTORS = ("forest", "linear_sqnr", "noise_equivalent")
BASELINE_FEATURES = {
    "linear_sqnr": "weight_sqnr_global_db",
    "noise_equivalent": "noise_equivalent_dnll",
}


def folds(groups: Sequence[str]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(held-out group, training row indices, held-out row indices) per distinct group, in
    first-seen order; the training rows are exactly the rows of every other group."""
    labels = np.asarray(list(groups), dtype=object)
    for group in dict.fromkeys(groups):
        held_out = labels == group
        yield group, np.flatnonzero(~held_out), np.flatnonzero(held_out)


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares line y ≈ a + b·x; b = 0 (a = mean y) when x is constant."""
    if len(x) < 2 or np.ptp(x) == 0.0:
        return float(np.mean(y)), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """``mae`` and ``rmse`` of ``predicted`` against ``actual``."""
    difference = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {
        "mae": float(np.mean(np.abs(difference))),
        "rmse": float(np.sqrt(np.mean(difference**2))),
    }


def baseline_predictions(
    x: np.ndarray, y: np.ndarray, features: Sequence[str], train: np.ndarray, test: np.ndarray
) -> dict[str, np.ndarray]:
    """The two baselines' predictions for the ``test`` rows, fitted on the ``train`` rows."""
    found = {}
    for name, feature in BASELINE_FEATURES.items():
        column = x[:, list(features).index(feature)]
        a, b = linear_fit(column[train], y[train])
        found[name] = a + b * column[test]
    return found


def leave_one_group_out(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    features: Sequence[str],
    fit: Callable[[np.ndarray, np.ndarray], object] | None = None,
) -> dict[str, dict[str, float]] | None:
    """MAE and RMSE of each of :data:`PREDICTORS` over the held-out predictions of every fold;
    None with fewer than two groups (nothing to hold out). ``fit(x, y)`` returns an object with
    ``predict(rows)`` (default: :func:`~.forest.fit_forest`)."""
    fit = fit or fit_forest
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(set(groups)) < 2:
        return None
    predicted = {name: np.zeros(len(y)) for name in PREDICTORS}
    for _, train, test in folds(groups):
        predicted["forest"][test] = fit(x[train], y[train]).predict(x[test])
        for name, values in baseline_predictions(x, y, features, train, test).items():
            predicted[name][test] = values
    return {name: errors(values, y) for name, values in predicted.items()}
