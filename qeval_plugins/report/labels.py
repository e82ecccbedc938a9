"""Names of runs and models: a run's label, display names, and whether a spec names a run.

A run is named by a *label*: the qeval block's ``spec`` (``rtn:bits=4``), else its quantizer plus
the options given in ``model_args``, else the backend (``hf``) plus ``dtype`` and lm-eval's own
quantization switches when given; a checkpoint saved already quantized adds
`` (prequantized METHOD)``. Labels are printed by :func:`qeval_plugins.core.specs.format_spec`, the
grammar the CLI parses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qeval_plugins.core.plan import HF_QUANTIZATION_ARGS
from qeval_plugins.core.prequantized import describe
from qeval_plugins.core.specs import format_spec
from qeval_plugins.report.impossible import NAN_OUTPUTS
from qeval_plugins.report.runs import Run, model_args
from qeval_plugins.report.values import as_mapping, is_given, scalar_text


def run_label(run: Run) -> str:
    """``spec`` of the qeval block, else quantizer + given options, else backend + dtype; then
    :func:`notes` (``none (prequantized bitsandbytes)``, ``rtn [kv int4 g64 r128 (sim)]``)."""
    args = model_args(run.config)
    if run.is_qeval:
        spec = run.qeval.get("spec")
        if not (isinstance(spec, str) and spec):
            options = as_mapping(run.qeval.get("options"))
            name = scalar_text(run.qeval.get("quantizer")) or scalar_text(args.get("quantizer"))
            spec = spec_text(name or "none", {key: args[key] for key in options if key in args})
        return spec + notes(run)
    keys = ("dtype", *HF_QUANTIZATION_ARGS)
    options = {key: args[key] for key in keys if is_given(args.get(key))}
    return spec_text(run.backend, options) + notes(run)


def notes(run: Run) -> str:
    """What a run's label adds to its spec: :func:`prequantized_note`, then the KV-cache
    quantization of its generations (`` [kv int4 g64 r128 (sim)]``), which is set by model_args,
    not by the spec, then `` [NaN outputs]`` for a run with NaN scores
    (:data:`~.impossible.NAN_OUTPUTS`). Runs of other backends have only the last."""
    kv_cache = as_mapping(run.qeval.get("kv_cache")).get("describe")
    kv = f" [kv {str(kv_cache)[:60]}]" if isinstance(kv_cache, str) and kv_cache else ""
    return prequantized_note(run) + kv + (f" [{NAN_OUTPUTS}]" if run.nan_scores else "")


def prequantized_note(run: Run) -> str:
    """`` (gptq int4 g128)`` for a run of a checkpoint saved already quantized: its method and
    format (and the checkpoint's folder name when the run is grouped with its ``reference=``
    model, where several checkpoints of one base may meet) from the block's ``prequantized``
    (the checkpoint's quantization_config, see :func:`qeval_plugins.core.prequantized.describe`),
    else "". Runs made before the
    ``prequantized`` quantizer existed recorded such a checkpoint as ``none``: their note says
    `` (prequantized ...)``, since that ``none`` is not an unquantized model."""
    config = run.qeval.get("prequantized")
    if not config:
        return ""
    shown = describe(as_mapping(config))
    if run.quantizer != "prequantized":
        return f" (prequantized {shown})"
    checkpoint = scalar_text(model_args(run.config).get("pretrained")) or ""
    if checkpoint and checkpoint != run.model:  # grouped with its reference: name the checkpoint
        shown += f" {Path(checkpoint.rstrip('/')).name[:60]}"
    return f" ({shown})"


def is_prequantized(run: Run) -> bool:
    """Whether ``run`` evaluated a checkpoint saved already quantized
    (:func:`prequantized_note`)."""
    return bool(run.qeval.get("prequantized"))


def spec_text(name: str, options: dict[str, Any]) -> str:
    """The canonical spec (:func:`~qeval_plugins.core.specs.format_spec`) of values read from a
    results file, each first made short, printable text (containers become ``?``)."""
    return format_spec(name, {key: _text(value) for key, value in options.items()})


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else scalar_text(value) or "?"


def display_names(models: list[str]) -> dict[str, str]:
    """Short names: a local path's last folder, a hub id as is; the full id where two clash."""
    short = {}
    for model in models:
        trimmed = model.rstrip("/\\")
        local = trimmed.startswith(("/", ".", "~")) or "\\" in trimmed
        short[model] = Path(trimmed).name if local and Path(trimmed).name else model
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {model: name if counts[name] == 1 else model for model, name in short.items()}


def matches_spec(run: Run, spec: str, any_options: bool = False) -> bool:
    """Whether ``spec`` names ``run``: its name is the label's, the quantizer or one of its
    aliases, and its options are the label's (in any order; any options if ``any_options``)."""
    name, options = _split_spec(spec)
    label_name, label_options = _split_spec(run.label.removesuffix(notes(run)))
    names = {label_name, run.quantizer, scalar_text(run.qeval.get("requested_as")), *aliases(run)}
    return name in names and (any_options or options == label_options)


def aliases(run: Run) -> list[str]:
    """The qeval block's ``aliases`` of the run's quantizer (texts only)."""
    aliases = run.qeval.get("aliases")
    return (
        [alias for alias in aliases if isinstance(alias, str)] if isinstance(aliases, list) else []
    )


def _split_spec(spec: str) -> tuple[str, list[str]]:
    """A spec's name and its ``key=value`` options, sorted, each :func:`_canonical_option`."""
    name, *pairs = spec.strip().split(":")
    return name.strip(), sorted(_canonical_option(pair) for pair in pairs)


def _canonical_option(pair: str) -> str:
    """``key=value`` compared by value: lower case, no spaces, a finite number written as the
    shortest text of its value (``bits=03`` and ``bits=3.0`` are ``bits=3``)."""
    key, sep, value = pair.strip().lower().replace(" ", "").partition("=")
    try:
        number = float(value)
    except ValueError:
        return f"{key}{sep}{value}"
    if not math.isfinite(number):
        return f"{key}{sep}{value}"
    return f"{key}{sep}{int(number) if number.is_integer() else number!r}"
