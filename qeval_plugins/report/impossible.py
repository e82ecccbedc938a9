"""Cost figures and settings that cannot be true: dropped, with one warning per file.

A size, a time, a bit width, a rate or a parameter count is never negative and never infinite;
an lm-eval ``--limit`` is never negative; ``config.qeval`` is an object. A results file may say
otherwise (hand-edited, written by another tool, damaged): such a value is treated as missing —
shown as "—", never compared — and named in one warning line of the file.

A score that is NaN (an accuracy, a perplexity, a logit SQNR or KL) is no measurement either: it
is what a model whose outputs were not finite (NaN weights, an overflow) scores. Results files
written before the backend refused such models hold runs like that, whose other scores (an
accuracy of 0.0 from NaN log-likelihoods) read like a bad model's: the whole run is flagged
(:func:`nan_scores_phrase`, and :data:`NAN_OUTPUTS` in its label).
"""

from __future__ import annotations

import math
from typing import Any

from qeval_plugins.report.values import as_number, listing, value_kind

# Where the qeval block records amounts (a path of keys below ``config.qeval``).
BLOCK_AMOUNTS = (
    ("load_seconds",),
    ("transform_seconds",),
    ("quantize_seconds",),
    ("param_bytes_before",),
    ("param_bytes_after",),
    ("param_count",),
    ("bits_per_param",),
    ("effective_bits",),
    ("peak_memory", "bytes"),
    ("throughput", "loglikelihood", "tokens_per_s"),
    ("throughput", "generate", "tokens_per_s"),
)
# Amounts lm-eval records in ``config`` itself.
CONFIG_AMOUNTS = (("model_num_parameters",),)


# The note a flagged run's label carries (`` [NaN outputs]``), in every table and export.
NAN_OUTPUTS = "NaN outputs"


def nan_scores_phrase(names: list[str]) -> str:
    """The warning of a run whose metrics ``names`` (``task/metric``) are NaN: its model's
    outputs were not finite, so none of its scores is a measurement."""
    return (
        f"NaN in {listing(names)}: the model's outputs were not finite (NaN weights or an "
        f"overflow), so no score of this run is a measurement; left out, run marked "
        f"[{NAN_OUTPUTS}]"
    )


def is_impossible(raw: Any) -> bool:
    """Whether ``raw`` reads as a number (:func:`~.values.as_number`) below 0 or infinite."""
    value = as_number(raw)
    return value is not None and (value < 0 or math.isinf(value))


def checked_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``config`` without what cannot be true, and one phrase per kind of problem.

    A ``qeval`` entry that is not an object is dropped (the run reads as one without a qeval
    block); each of :data:`CONFIG_AMOUNTS` and, inside the block, :data:`BLOCK_AMOUNTS` that is
    negative or infinite is dropped. The given mappings are never changed: what is dropped is
    left out of copies.
    """
    phrases = []
    if "qeval" in config and not isinstance(config["qeval"], dict):
        kind = value_kind(config["qeval"])
        phrases.append(
            f"config.qeval is a {kind}, not an object; read as a run without a qeval block"
        )
        config = {key: value for key, value in config.items() if key != "qeval"}
    config, dropped = _without_impossible(config, CONFIG_AMOUNTS)
    if isinstance(config.get("qeval"), dict):
        block, inside = _without_impossible(config["qeval"], BLOCK_AMOUNTS)
        config = {**config, "qeval": block} if inside else config
        dropped += [f"qeval.{name}" for name in inside]
    if dropped:
        phrases.append(f"negative or infinite {listing(dropped, 6)}; treated as missing")
    return config, phrases


def checked_settings(settings: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``settings`` (:func:`~.settings.run_settings`) without a negative ``limit``, and the
    phrase saying so."""
    if not is_impossible(settings.get("limit")):
        return settings, []
    limit = settings["limit"]
    kept = {key: value for key, value in settings.items() if key != "limit"}
    return kept, [f"negative limit {limit}; treated as unknown"]


def _without_impossible(
    mapping: dict[str, Any], places: tuple[tuple[str, ...], ...]
) -> tuple[dict[str, Any], list[str]]:
    """``mapping`` without each of ``places`` whose value :func:`is_impossible`, and their
    dotted names."""
    dropped = []
    for place in places:
        if is_impossible(_at(mapping, place)):
            mapping = _without(mapping, place)
            dropped.append(".".join(place))
    return mapping, dropped


def _at(mapping: dict[str, Any], place: tuple[str, ...]) -> Any:
    """``mapping[place[0]][place[1]]...``, None where a step is missing or not an object."""
    node: Any = mapping
    for key in place:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _without(mapping: dict[str, Any], place: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``mapping`` without the value at ``place`` (only the objects on the way are
    copied)."""
    head, *rest = place
    if not rest:
        return {key: value for key, value in mapping.items() if key != head}
    return {**mapping, head: _without(mapping[head], tuple(rest))}
