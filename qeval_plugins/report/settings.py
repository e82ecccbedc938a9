"""The evaluation settings a run records, and where the runs of one model disagree on them.

Runs of one model whose settings differ (limit, few-shot, gen_kwargs, seeds, chat template, model
revision or dtype, lm-eval or qeval version: :data:`SETTINGS`) get one warning line: their deltas
may measure the settings rather than the quantization.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from qeval_plugins.report.runs import Run, model_args
from qeval_plugins.report.values import as_mapping, listing

# Settings that change a run's scores, compared across the runs of a model. Each is read from
# the results file: ``config[key]``, else the top level ``key`` (lm-eval writes the chat template
# and fewshot_as_multiturn there), except revision and dtype (``config.model_args``; revision
# else ``config.model_revision``) and qeval_version (``config.qeval.qeval_version``).
SETTINGS = (
    "limit",
    "gen_kwargs",
    "random_seed",
    "numpy_seed",
    "torch_seed",
    "fewshot_seed",
    "apply_chat_template",
    "chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "revision",
    "dtype",
    "lm_eval_version",
    "qeval_version",
)
# Settings whose text can be long: compared by their lm-eval ``<key>_sha`` or a hash of the text.
HASHED_SETTINGS = frozenset({"chat_template", "system_instruction"})


def run_settings(data: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The :data:`SETTINGS` a results file records, as :func:`setting_text` (absent: unknown)."""
    args = model_args(config)
    places = {
        "revision": [
            args,
            {"revision": config.get("model_revision")} if "model_revision" in config else {},
        ],
        "dtype": [args],
        "qeval_version": [as_mapping(config.get("qeval"))],
    }
    found: dict[str, Any] = {}
    for key in SETTINGS:
        place = next((place for place in places.get(key, [config, data]) if key in place), None)
        if place is not None:
            found[key] = place[key]
    for key in HASHED_SETTINGS & found.keys():
        sha = data.get(f"{key}_sha")
        found[key] = sha if isinstance(sha, str) and sha else _digest(found[key])
    return {key: setting_text(found[key]) for key in SETTINGS if key in found}


def _digest(value: Any) -> str | None:
    """A short SHA-256 of a long text setting (None, empty and non-text stay as they are)."""
    if not isinstance(value, str) or not value:
        return value
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def setting_text(value: Any) -> str:
    """A setting as comparable text: "none" for null and empty values, whole numbers without
    ".0" (a limit of 4.0 is "4"), true/false, containers as sorted compact JSON."""
    if value in (None, "", {}, []):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def fewshot_counts(data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, int]:
    """Task -> few-shot count of the tasks in ``metrics``: lm-eval's ``n-shot``, else
    ``configs[task].num_fewshot``; tasks with neither (or not a count) are left out."""
    shots = as_mapping(data.get("n-shot"))
    configs = as_mapping(data.get("configs"))
    counts = {}
    for task in metrics:
        count = shots.get(task, as_mapping(configs.get(task)).get("num_fewshot"))
        if type(count) is int and count >= 0:
            counts[task] = count
    return counts


def setting_differences(runs: list[Run]) -> list[str]:
    """One phrase per :data:`SETTINGS` entry (and few-shot count per task) on which runs that
    record it disagree: ``limit 4 (none, bnb-nf4) vs 20 (rtn:bits=2)``. A run that does not
    record a setting is not compared on it."""
    phrases = []
    for key in SETTINGS:
        phrase = _disagreement(
            key, {run.label: run.settings[key] for run in runs if key in run.settings}
        )
        phrases += [phrase] if phrase else []
    tasks = sorted({task for run in runs for task in run.fewshot})
    for task in tasks:
        counts = {run.label: str(run.fewshot[task]) for run in runs if task in run.fewshot}
        phrase = _disagreement(f"num_fewshot of {task}", counts)
        phrases += [phrase] if phrase else []
    return phrases


def _disagreement(name: str, values: dict[str, str], width: int = 24) -> str | None:
    """``name v1 (labels) vs v2 (labels)`` when ``values`` (label -> text) hold several texts,
    each cut to ``width`` characters; None when they agree."""
    by_value: dict[str, list[str]] = {}
    for label, value in values.items():
        by_value.setdefault(value, []).append(label)
    if len(by_value) < 2:
        return None
    shown = [
        f"{value if len(value) <= width else value[: width - 1] + '…'} ({listing(labels)})"
        for value, labels in by_value.items()
    ]
    return f"{name} {' vs '.join(shown)}"
