"""``qeval run`` outputs as training rows: one per (model, quantizer spec), newest run winning.

A row's target (:func:`resolve_target`) is one of

* ``delta_nll`` (the default): the run's ΔNLL on the ``qeval_sqnr`` passages, ``ln_ppl_ratio``
  = mean(NLL_quant − NLL_ref) per token, nats (``config.qeval.sqnr.metrics``);
* a quantizer's name (``gptq``): the same ΔNLL, of that quantizer's runs only, so the cheap
  features of its round-to-nearest twin predict what the expensive method reaches;
* a task's name (``hellaswag``): the run's value of that task's main metric (the first one its
  results list).

Every run must be a ``qeval`` run that measured ``qeval_sqnr`` (the unquantized ``none`` runs
are not rows); any other is refused in one line naming what it lacks. A model's family is its
``config.json``'s ``qeval_family.recipe`` when present, else its ``model_type``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.predict.features import model_folder
from qeval_plugins.predict.rtn_twin import NotModelled, RtnTwin, resolved_spec, rtn_twin
from qeval_plugins.report.load import MAX_RESULTS_BYTES, load_runs, no_runs_message
from qeval_plugins.report.runs import Run, model_args
from qeval_plugins.report.sqnr import SQNR_TASK
from qeval_plugins.report.values import as_mapping, as_number, scalar_text

DELTA_NLL = "delta_nll"
DELTA_NLL_METRIC = "ln_ppl_ratio"
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Target:
    """What a predictor predicts: ``kind`` ``delta_nll``, ``quantizer`` or ``task``; ``name``
    the quantizer or task; ``metric`` the metric read (``ln_ppl_ratio`` for the first two)."""

    kind: str
    name: str
    metric: str

    @property
    def label(self) -> str:
        """``delta_nll``, ``gptq (ΔNLL)``, ``hellaswag/acc``."""
        if self.kind == DELTA_NLL:
            return "ΔNLL on qeval_sqnr (nats/token)"
        if self.kind == "quantizer":
            return f"ΔNLL of {self.name} on qeval_sqnr (nats/token)"
        return f"{self.name}/{self.metric}"


@dataclass(frozen=True)
class Row:
    """One (model, spec) of the training data."""

    model: str  # the run's pretrained
    model_dir: str  # its local folder: what the features read, and the model's identity
    family: str
    spec: str
    quantizer: str
    twin: RtnTwin
    target: float
    eval_seconds: float | None  # lm-eval's total_evaluation_time_seconds of the run
    params: int | None
    text_file: str | None  # qeval_sqnr's text_file of the run (None: the bundled passages)
    path: Path


def read_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[str]]:
    """The runs in ``paths`` and the reader's warning lines; QevalError when there is none."""
    runs, warnings = load_runs(paths)
    if not runs:
        raise QevalError(no_runs_message(paths)[0])
    return runs, warnings


def resolve_target(name: str, runs: Sequence[Run]) -> Target:
    """``name`` (``--target``) as a :class:`Target`: ``delta_nll``, a quantizer some run used,
    or a task some run measured; QevalError otherwise."""
    if name == DELTA_NLL:
        return Target(DELTA_NLL, DELTA_NLL, DELTA_NLL_METRIC)
    if any(run.quantizer == name for run in runs):
        return Target("quantizer", name, DELTA_NLL_METRIC)
    for run in runs:
        metrics = run.metrics.get(name)
        if metrics:
            return Target("task", name, next(iter(metrics)))
    used = sorted({str(run.quantizer) for run in runs if run.quantizer not in (None, "none")})
    raise QevalError(
        f"--target {name}: no run used quantizer '{name}' and no run measured task '{name}'; "
        f"give delta_nll, a quantizer of the runs ({', '.join(used) or 'none'}) or a task name"
    )


def training_rows(runs: Sequence[Run], target: Target) -> tuple[list[Row], list[str]]:
    """One :class:`Row` per (model folder, spec) of ``runs`` (the newest run of a pair wins), and
    a line per run left out because its spec changes more than the weights (activations, kept
    layers: :class:`NotModelled`); QevalError for a run that is not a qeval run with
    ``qeval_sqnr``, lacks the target, or has no round-to-nearest twin, and when no row is left."""
    newest: dict[tuple[str, str], Row] = {}
    dates: dict[tuple[str, str], float] = {}
    left_out: list[str] = []
    for run in runs:
        try:
            row = _row(run, target)
        except NotModelled as error:
            left_out.append(f"{run.path} left out: {error}")
            continue
        if row is None:
            continue
        key = (row.model_dir, row.spec)
        if key not in newest or run.date >= dates[key]:
            newest[key], dates[key] = row, run.date
    if not newest:
        wanted = f"of quantizer {target.name} " if target.kind == "quantizer" else ""
        raise QevalError(f"no quantized runs {wanted}to learn from (the none runs are no rows)")
    return sorted(newest.values(), key=lambda row: (row.model, row.spec)), left_out


def _row(run: Run, target: Target) -> Row | None:
    if not run.is_qeval:
        raise QevalError(
            f"{run.path}: not a qeval run (no config.qeval); qeval predict learns from "
            f"'qeval run' outputs that measured qeval_sqnr"
        )
    if run.quantizer in (None, "none"):
        return None
    spec = scalar_text(run.qeval.get("spec")) or str(run.quantizer)
    delta = run.metrics.get(SQNR_TASK, {}).get(DELTA_NLL_METRIC)
    if delta is None or not math.isfinite(delta.value):
        raise QevalError(
            f"{run.path} ({spec}): no qeval_sqnr ΔNLL (config.qeval.sqnr.metrics."
            f"{DELTA_NLL_METRIC}); rerun it with --tasks qeval_sqnr"
        )
    if target.kind == "quantizer" and run.quantizer != target.name:
        return None
    value = delta.value
    if target.kind == "task":
        metric = run.metrics.get(target.name, {}).get(target.metric)
        if metric is None or not math.isfinite(metric.value):
            raise QevalError(
                f"{run.path} ({spec}): no finite {target.name}/{target.metric} for --target "
                f"{target.name}; rerun it with --tasks qeval_sqnr,{target.name}"
            )
        value = metric.value
    pretrained = scalar_text(model_args(run.config).get("pretrained")) or run.model
    folder = model_folder(pretrained)
    options = run.qeval.get("options")
    if isinstance(options, dict):
        twin = rtn_twin(str(run.quantizer), options, spec)
    else:  # an older run that recorded option names only
        twin = rtn_twin(*resolved_spec(spec), spec)
    raw = _raw(run.path)
    seconds = as_number(raw.get("total_evaluation_time_seconds"))
    params = as_number(run.qeval.get("param_count"))
    return Row(
        model=pretrained,
        model_dir=folder,
        family=model_family(folder),
        spec=spec,
        quantizer=str(run.quantizer),
        twin=twin,
        target=float(value),
        eval_seconds=seconds if seconds is not None and math.isfinite(seconds) else None,
        params=int(params) if params is not None and math.isfinite(params) else None,
        text_file=_text_file(raw),
        path=run.path,
    )


def _raw(path: Path) -> dict[str, Any]:
    """The results file's top level (already read once by the report's reader, so readable)."""
    try:
        return as_mapping(json.loads(read_regular(path, MAX_RESULTS_BYTES)))
    except (OSError, ValueError, RecursionError):
        return {}


def _text_file(raw: dict[str, Any]) -> str | None:
    """``qeval_sqnr``'s ``text_file`` in the results' ``configs``, None for the bundled texts."""
    configs = as_mapping(raw.get("configs"))
    return scalar_text(
        as_mapping(as_mapping(configs.get(SQNR_TASK)).get("metadata")).get("text_file")
    )


def model_family(model_dir: str | Path) -> str:
    """``qeval_family.recipe`` of the folder's ``config.json``, else its ``model_type``, else
    ``unknown``."""
    try:
        config = json.loads(read_regular(Path(model_dir) / "config.json", MAX_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError):
        return "unknown"
    config = as_mapping(config)
    recipe = scalar_text(as_mapping(config.get("qeval_family")).get("recipe"))
    return recipe or scalar_text(config.get("model_type")) or "unknown"
