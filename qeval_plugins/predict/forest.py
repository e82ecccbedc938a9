"""The random forest: fitted with scikit-learn, kept and evaluated as plain arrays.

A tree is five arrays over its nodes (sklearn's ``tree_`` layout): ``feature`` (the column a
node splits on), ``threshold`` (go left when x[feature] ≤ threshold), ``left`` and ``right``
(child indices; −1 at a leaf) and ``value`` (the leaf's mean target). :func:`fit_forest` needs
scikit-learn (``pip install 'qeval[predict]'``); :class:`Forest` predicts with numpy alone, as
sklearn does (the row cast to float32 before the comparisons), and :func:`forest_from_json`
reads the trees back from untrusted JSON with strict checks: types, equal lengths, child indices
in range and after their parent (so every walk ends at a leaf), features in range, finite
numbers, and caps on the number of trees and nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qeval_plugins.core.errors import QevalError

TREES = 200
MIN_SAMPLES_LEAF = 1
MAX_TREES = 2000
MAX_NODES = 1 << 16
MAX_TOTAL_NODES = 1 << 22
ARRAYS = ("feature", "threshold", "left", "right", "value")


@dataclass(frozen=True)
class Tree:
    """One regression tree as arrays (module docstring)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """The leaf value reached by each row of ``rows`` (float64, already float32-rounded)."""
        node = np.zeros(len(rows), dtype=np.int64)
        active = self.left[node] >= 0
        while active.any():
            at = node[active]
            go_left = rows[active, self.feature[at]] <= self.threshold[at]
            node[active] = np.where(go_left, self.left[at], self.right[at])
            active = self.left[node] >= 0
        return self.value[node]

    def to_json(self) -> dict[str, list]:
        return {name: getattr(self, name).tolist() for name in ARRAYS}


@dataclass(frozen=True)
class Forest:
    """Trees whose mean is the prediction and whose spread is its uncertainty."""

    trees: tuple[Tree, ...]

    def per_tree(self, rows: Any) -> np.ndarray:
        """``[trees, rows]``: every tree's prediction for every row."""
        matrix = np.asarray(rows, dtype=np.float64).astype(np.float32).astype(np.float64)
        return np.stack([tree.predict(np.atleast_2d(matrix)) for tree in self.trees])

    def predict(self, rows: Any) -> np.ndarray:
        """The forest's prediction per row: the mean over its trees."""
        return self.per_tree(rows).mean(axis=0)

    def spread(self, rows: Any) -> np.ndarray:
        """The standard deviation of the trees' predictions per row (population, ddof 0)."""
        return self.per_tree(rows).std(axis=0)

    def to_json(self) -> list[dict[str, list]]:
        return [tree.to_json() for tree in self.trees]


def require_sklearn() -> Any:
    """``sklearn.ensemble``; one line naming the pip extra when scikit-learn is missing."""
    try:
        from sklearn import ensemble
    except ImportError:
        raise QevalError(
            "qeval predict fit needs scikit-learn: pip install 'qeval[predict]'"
        ) from None
    return ensemble


def fit_sklearn(x: Any, y: Any, seed: int = 0, trees: int = TREES) -> Any:
    """sklearn's RandomForestRegressor fitted on ``x`` (rows × features) and ``y``."""
    model = require_sklearn().RandomForestRegressor(
        n_estimators=trees, min_samples_leaf=MIN_SAMPLES_LEAF, random_state=seed, n_jobs=1
    )
    return model.fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def from_sklearn(model: Any) -> Forest:
    """The trees of a fitted RandomForestRegressor (single output) as a :class:`Forest`."""
    trees = []
    for estimator in model.estimators_:
        tree = estimator.tree_
        trees.append(
            Tree(
                feature=np.asarray(tree.feature, dtype=np.int64),
                threshold=np.asarray(tree.threshold, dtype=np.float64),
                left=np.asarray(tree.children_left, dtype=np.int64),
                right=np.asarray(tree.children_right, dtype=np.int64),
                value=np.asarray(tree.value[:, 0, 0], dtype=np.float64),
            )
        )
    return Forest(tuple(trees))


def fit_forest(x: Any, y: Any, seed: int = 0, trees: int = TREES) -> Forest:
    """:func:`fit_sklearn` as a :class:`Forest`."""
    return from_sklearn(fit_sklearn(x, y, seed, trees))


def forest_from_json(data: Any, features: int) -> Forest:
    """The :class:`Forest` in ``data`` (``to_json``'s list), for rows of ``features`` columns;
    ValueError with one line saying what is wrong (module docstring: the checks)."""
    if not isinstance(data, list) or not data:
        raise ValueError("'trees' must be a non-empty list")
    if len(data) > MAX_TREES:
        raise ValueError(f"'trees' holds {len(data)} trees, more than {MAX_TREES}")
    total = 0
    trees = []
    for index, raw in enumerate(data):
        try:
            tree = _tree_from_json(raw, features)
        except ValueError as error:
            raise ValueError(f"tree {index}: {error}") from None
        total += len(tree.value)
        if total > MAX_TOTAL_NODES:
            raise ValueError(f"the trees hold more than {MAX_TOTAL_NODES} nodes")
        trees.append(tree)
    return Forest(tuple(trees))


def _tree_from_json(raw: Any, features: int) -> Tree:
    if not isinstance(raw, dict) or sorted(raw) != sorted(ARRAYS):
        raise ValueError(f"must be an object with exactly the keys {', '.join(ARRAYS)}")
    lists = [raw[name] for name in ARRAYS]
    if not all(isinstance(values, list) for values in lists):
        raise ValueError("every array must be a list")
    count = len(lists[0])
    if not 1 <= count <= MAX_NODES or any(len(values) != count for values in lists):
        raise ValueError(f"arrays must have one equal length of 1 to {MAX_NODES} nodes")
    feature, left, right = (_integers(raw[name], name) for name in ("feature", "left", "right"))
    threshold, value = (_numbers(raw[name], name) for name in ("threshold", "value"))
    nodes = np.arange(count)
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise ValueError("a node has one child")
    inner = ~leaf
    if np.any((left[inner] <= nodes[inner]) | (left[inner] >= count)):
        raise ValueError("a left child index is out of range (children follow their parent)")
    if np.any((right[inner] <= nodes[inner]) | (right[inner] >= count)):
        raise ValueError("a right child index is out of range (children follow their parent)")
    if np.any((feature[inner] < 0) | (feature[inner] >= features)):
        raise ValueError(f"a split feature is out of range (0 to {features - 1})")
    return Tree(feature, threshold, left, right, value)


def _integers(values: Sequence[Any], name: str) -> np.ndarray:
    if not all(type(v) is int and abs(v) < 2**62 for v in values):
        raise ValueError(f"'{name}' must hold integers only")
    return np.asarray(values, dtype=np.int64)


def _numbers(values: Sequence[Any], name: str) -> np.ndarray:
    if not all(
        (type(v) is float and math.isfinite(v)) or (type(v) is int and abs(v) < 2**53)
        for v in values
    ):
        raise ValueError(f"'{name}' must hold finite numbers only")
    return np.asarray(values, dtype=np.float64)
