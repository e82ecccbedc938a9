"""``qeval predict MODEL``: the cheap features of each spec on a model, the predictor's forecast
with its spread, what lies outside the training range, and what evaluating would have cost."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.specs import format_spec as canonical_spec
from qeval_plugins.core.specs import parse_spec
from qeval_plugins.predict.features import FEATURES, MODEL_FEATURES, ModelFeatures, model_folder
from qeval_plugins.predict.landscape import texts_hash
from qeval_plugins.predict.predictor_file import Predictor
from qeval_plugins.predict.rows import model_family
from qeval_plugins.predict.rtn_twin import RtnTwin, resolved_spec, rtn_twin
from qeval_plugins.predict.validation import BASELINE_FEATURES

RANGE_SLACK = 1e-9  # relative: a feature equal to a training bound is inside


@dataclass
class SpecForecast:
    """One spec's forecast: the forest's mean and the spread of its trees, the baselines', the
    features outside the training range, and the evaluation time it replaces (None: unknown)."""

    spec: str
    quantizer: str
    twin: RtnTwin
    value: float
    spread: float
    baselines: dict[str, float]
    outside: list[str]
    evaluation_seconds: float | None
    evaluation_basis: int  # training runs the estimate comes from


@dataclass
class Forecast:
    """Every spec's forecast on one model, and the seconds its features took."""

    model: str
    family: str
    params: float
    model_outside: list[str]
    specs: list[SpecForecast] = field(default_factory=list)
    feature_seconds: float = 0.0


def check_compatible(predictor: Predictor) -> None:
    """QevalError when the predictor's feature columns are not the ones computed here."""
    if tuple(predictor.features) != FEATURES:
        raise QevalError(
            f"the predictor's features ({', '.join(predictor.features)}) are not the ones this "
            f"qeval computes ({', '.join(FEATURES)}); fit it again with qeval predict fit"
        )


def forecast(
    model: str, specs: Sequence[str], predictor: Predictor, device: str = "cpu"
) -> Forecast:
    """The forecast of every spec in ``specs`` on ``model`` (module docstring)."""
    check_compatible(predictor)
    twins = []
    for spec in specs:
        quantizer, options = resolved_spec(spec)
        twins.append((spec, quantizer, rtn_twin(quantizer, options, spec)))
    folder = model_folder(model)
    started = time.perf_counter()
    source = ModelFeatures(folder, device, predictor.texts.get("file"))
    expected = predictor.texts.get("sha256")
    if expected and texts_hash(source.texts) != expected:
        raise QevalError(
            f"the texts of the noise passes ({predictor.texts.get('file') or 'bundled'}) differ "
            f"from those the predictor was fitted with; fit it again here"
        )
    rows = [source.row(twin) for _, _, twin in twins]
    seconds = time.perf_counter() - started
    x = np.asarray([[row[name] for name in FEATURES] for row in rows], dtype=np.float64)
    trees = predictor.forest.per_tree(x)
    params = 10 ** rows[0]["log10_params"] if rows else 0.0
    result = Forecast(
        model=model,
        family=model_family(folder),
        params=params,
        model_outside=_outside(rows[0], predictor, MODEL_FEATURES) if rows else [],
        feature_seconds=seconds,
    )
    spec_features = [name for name in FEATURES if name not in MODEL_FEATURES]
    for i, (spec, quantizer, twin) in enumerate(twins):
        canonical = canonical_spec(quantizer, parse_spec(spec)[1])
        estimate, basis = evaluation_estimate(predictor, canonical, quantizer, params)
        result.specs.append(
            SpecForecast(
                spec=spec,
                quantizer=quantizer,
                twin=twin,
                value=float(trees[:, i].mean()),
                spread=float(trees[:, i].std()),
                baselines={
                    name: a + b * rows[i][BASELINE_FEATURES[name]]
                    for name, (a, b) in predictor.baselines.items()
                    if name in BASELINE_FEATURES
                },
                outside=_outside(rows[i], predictor, spec_features),
                evaluation_seconds=estimate,
                evaluation_basis=basis,
            )
        )
    return result


def _outside(row: dict[str, float], predictor: Predictor, names: Sequence[str]) -> list[str]:
    """The features of ``names`` whose value in ``row`` lies outside the training range."""
    found = []
    for name in names:
        low, high = predictor.training_range[name]
        slack = RANGE_SLACK * max(1.0, abs(low), abs(high))
        if not low - slack <= row[name] <= high + slack:
            found.append(name)
    return found


def evaluation_estimate(
    predictor: Predictor, spec: str, quantizer: str, params: float
) -> tuple[float | None, int]:
    """What quantizing and evaluating ``spec`` (canonical, as a run records it) on a model of
    ``params`` parameters would take: the median of the recorded seconds of the training runs
    of that spec (else of its quantizer), each scaled by the parameter ratio (evaluation cost
    grows about linearly with size), and how many runs it comes from; (None, 0) without such
    runs."""
    for same in (
        lambda cost: cost["spec"] == spec,
        lambda cost: cost["quantizer"] == quantizer,
    ):
        scaled = [
            cost["seconds"] * params / cost["params"]
            for cost in predictor.costs
            if same(cost) and cost["params"] > 0
        ]
        if scaled:
            return statistics.median(scaled), len(scaled)
    return None, 0
