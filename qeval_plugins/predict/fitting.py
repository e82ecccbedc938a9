"""``qeval predict fit``: runs → rows → features → a fitted, validated :class:`Predictor`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qeval_plugins.predict.features import FEATURES, ModelFeatures
from qeval_plugins.predict.forest import TREES, fit_forest, require_sklearn
from qeval_plugins.predict.landscape import texts_hash
from qeval_plugins.predict.predictor_file import Predictor
from qeval_plugins.predict.rows import Row, read_runs, resolve_target, training_rows
from qeval_plugins.predict.validation import BASELINE_FEATURES, leave_one_group_out, linear_fit


@dataclass
class Fitted:
    """A fitted predictor, its rows and feature matrix, the reader's warnings and the seconds
    the features took."""

    predictor: Predictor
    rows: list[Row]
    x: np.ndarray
    warnings: list[str]
    feature_seconds: float


def fit_predictor(
    paths: Sequence[str | Path],
    target: str = "delta_nll",
    device: str = "cpu",
    trees: int = TREES,
    seed: int = 0,
    progress: Callable[[str], None] = lambda line: None,
) -> Fitted:
    """Fit a predictor of ``target`` on the runs in ``paths`` (module docstring of
    :mod:`.rows` for the targets); QevalError for runs it cannot learn from."""
    require_sklearn()  # before any feature pass
    runs, warnings = read_runs(paths)
    resolved = resolve_target(target, runs)
    rows, left_out = training_rows(runs, resolved)
    warnings = [*warnings, *left_out]
    text_file = Counter(row.text_file for row in rows).most_common(1)[0][0]
    started = time.perf_counter()
    values: dict[int, dict[str, float]] = {}
    texts: list[str] = []
    for model_dir in dict.fromkeys(row.model_dir for row in rows):  # one model in memory at once
        mine = [i for i, row in enumerate(rows) if row.model_dir == model_dir]
        progress(f"features of {rows[mine[0]].model}")
        source = ModelFeatures(model_dir, device, text_file)
        texts = source.texts
        for i in mine:
            values[i] = source.row(rows[i].twin)
        source.release()
    matrix = [[values[i][name] for name in FEATURES] for i in range(len(rows))]
    feature_seconds = time.perf_counter() - started
    x = np.asarray(matrix, dtype=np.float64)
    y = np.asarray([row.target for row in rows], dtype=np.float64)

    def fit(train_x: np.ndarray, train_y: np.ndarray):
        return fit_forest(train_x, train_y, seed=seed, trees=trees)

    validation = {
        "leave_one_model_out": leave_one_group_out(
            x, y, [row.model_dir for row in rows], FEATURES, fit
        ),
        "leave_one_family_out": leave_one_group_out(
            x, y, [row.family for row in rows], FEATURES, fit
        ),
    }
    predictor = Predictor(
        target=target,
        target_label=resolved.label,
        features=FEATURES,
        forest=fit(x, y),
        training_range={
            name: (float(x[:, i].min()), float(x[:, i].max())) for i, name in enumerate(FEATURES)
        },
        rows=len(rows),
        models=sorted({row.model for row in rows}),
        families=sorted({row.family for row in rows}),
        baselines={
            name: linear_fit(x[:, FEATURES.index(feature)], y)
            for name, feature in BASELINE_FEATURES.items()
        },
        validation=validation,
        costs=[
            {
                "spec": row.spec,
                "quantizer": row.quantizer,
                "params": float(row.params or 10 ** x[i, FEATURES.index("log10_params")]),
                "seconds": row.eval_seconds,
            }
            for i, row in enumerate(rows)
            if row.eval_seconds is not None
        ],
        texts={"file": text_file, "sha256": texts_hash(texts)},
    )
    return Fitted(predictor, rows, x, warnings, feature_seconds)
