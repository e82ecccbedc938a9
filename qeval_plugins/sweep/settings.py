"""What a ``qeval run`` result depends on, recorded with it so that a resumed sweep reuses a run
only when it was made with the same settings.

Next to ``DIR/<run>/results.json`` the sweep writes ``qeval_run.json``::

    {"format": 1, "settings": {...}, "results_sha256": "<SHA-256 of results.json>"}

The settings are everything that can change a number: the model (name, and for a local folder
the name and SHA-256 of each weight, config and code file), the quantizer spec, the
quantizer's ``version`` and its plugin's distribution and version, the device, the requested
tasks, qeval's and lm-eval's versions, the SHA-256 of a calibrated quantizer's calibration file,
the ``--model_args`` given
(``revision``, ``dtype``, ...) and every lm-eval option except the few that only change speed,
logging or where output goes (:data:`NOT_KEYED`: ``--batch_size``, ``--verbosity``, ...). Options
lm-eval adds later are therefore keyed by default. The record names the results file by its
checksum, so a record and a results file that do not belong together (a crash between the two
writes, a results file copied in by hand) count as unknown settings, never as a match.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from qeval_plugins.core.calibration import read_passages
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.sweep.specs import CheckedSpec

SETTINGS_FILE = "qeval_run.json"
FORMAT = 1
MAX_RECORD_BYTES = 16 << 20  # a settings record: a few kB
MAX_CONFIG_BYTES = 16 << 20  # lm-eval's --config YAML

# lm-eval options that change neither which documents are scored nor how: speed, logging, output.
NOT_KEYED = frozenset(
    {
        "batch_size",
        "max_batch_size",
        "verbosity",
        "write_out",
        "show_config",
        "log_samples",
        "wandb_args",
        "wandb_config_args",
        "trackio_args",
        "hf_hub_log_args",
        "use_cache",
        "cache_requests",
        "check_integrity",
        "trust_remote_code",
        "confirm_run_unsafe_code",
    }
)
# lm-eval options that ``qeval run`` sets itself, and the qeval option to use instead.
QEVAL_OWNED = {
    "model": "--model",
    "tasks": "--tasks",
    "device": "--device",
    "output_path": "--output",
}
# --model_args keys that ``qeval run`` sets itself from --model and --quantizers.
OWNED_MODEL_ARGS = {"pretrained": "--model", "quantizer": "--quantizers"}


@dataclass(frozen=True)
class LmEvalOptions:
    """The lm-eval options passed through ``qeval run``: ``keyed`` are those that change results
    (JSON-safe values, None when not given); ``model_args`` the user's extra model arguments."""

    keyed: dict[str, Any]
    model_args: dict[str, Any]
    include_path: str | None


_OPTION = re.compile(r"^argument (--\w+)(?:/-\w+)?:")


class _Refusal(Exception):
    """An argparse error of lm-eval's parser, caught to become one QevalError line."""


def lm_eval_types() -> dict[str, Callable[[str], Any]]:
    """The checked type of every numeric lm-eval option ``qeval run`` passes on (its ``dest``
    -> argparse type, all from :mod:`qeval_plugins.core.arguments`): lm-eval's own types take
    ``--num_fewshot -1``, ``--max_batch_size 0``, ``--batch_size -3`` and ``--seed -1`` and fail
    later, in the run."""
    from qeval_plugins.core import arguments

    return {
        "limit": arguments.document_limit,
        "num_fewshot": arguments.non_negative_int,
        "batch_size": arguments.batch_size,
        "max_batch_size": arguments.positive_int,
        "seed": arguments.seed_list,
    }


def _lm_eval_run_parser() -> argparse.ArgumentParser:
    """lm-eval's own ``run`` parser, so options are read exactly as lm-eval reads them, with
    qeval's checks on its numbers first (:func:`lm_eval_types`)."""
    from lm_eval._cli.run import Run

    subcommands = argparse.ArgumentParser(prog="lm_eval").add_subparsers()
    Run.create(subcommands)
    parser = subcommands.choices["run"]
    checked = lm_eval_types()
    for action in parser._actions:  # argparse has no public way to change an option's type
        check = checked.get(action.dest)
        if check is not None:
            action.type = _then(check, action.type)

    def refuse(message: str):
        raise _Refusal(message)

    parser.error = refuse  # an argparse error becomes one line, not usage text and exit
    return parser


def _then(check: Callable[[str], Any], own: Callable[[str], Any] | None) -> Callable[[str], Any]:
    """An argparse type: ``check`` (which refuses a bad value in one line), then lm-eval's own
    type on what ``check`` returns, so the value is still what lm-eval would make of it."""
    return check if own is None else lambda text: own(check(text))


def _json_safe(value: Any) -> Any:
    """``value`` as it would round-trip through JSON (tuples become lists, odd types strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def parse_lm_eval_args(extra: Sequence[str]) -> LmEvalOptions:
    """Read the options ``qeval run`` passes on to lm-eval; one QevalError line for a bad one."""
    try:
        namespace = vars(_lm_eval_run_parser().parse_args(list(extra)))
    except (_Refusal, ValueError, TypeError) as error:
        message = _OPTION.sub(r"\1:", str(error))  # "argument --limit/-L: ..." -> "--limit: ..."
        where = " " if message.startswith("--") else ": "
        raise QevalError(f"lm-eval option{where}{message} (see 'lm_eval run --help').") from None
    for name, instead in QEVAL_OWNED.items():
        if namespace.get(name) is not None:
            raise QevalError(f"give the {name.replace('_', ' ')} with qeval run's {instead}.")
    model_args = namespace.get("model_args") or {}
    for name, instead in OWNED_MODEL_ARGS.items():
        if name in {str(key).strip() for key in model_args}:
            raise QevalError(f"--model_args sets '{name}'; give it with qeval run's {instead}.")
    ignored = NOT_KEYED | set(QEVAL_OWNED) | {"model_args", "func", "command"}
    keyed = {name: value for name, value in namespace.items() if name not in ignored}
    if keyed.get("config"):
        keyed["config_sha256"] = _file_sha256(Path(keyed["config"]), "--config")
    return LmEvalOptions(_json_safe(keyed), _json_safe(model_args), namespace.get("include_path"))


def _file_sha256(path: Path, what: str) -> str:
    """SHA-256 of a regular file of at most :data:`MAX_CONFIG_BYTES` (never a FIFO or device)."""
    try:
        return hashlib.sha256(read_regular(path, MAX_CONFIG_BYTES)).hexdigest()
    except OSError as error:
        raise QevalError(f"{what} '{path}' cannot be read ({error.strerror}).") from None


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def model_identity(model: str) -> Any:
    """What identifies a model's weights: its name, and for a local folder the SHA-256 of its
    files (:func:`~qeval_plugins.storage.reference_cache.checkpoint_identity`): weights replaced
    in place with their size and modification time kept are other settings, never a match."""
    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
    from qeval_plugins.storage.reference_cache import checkpoint_identity

    folder = Path(model).expanduser()
    if model in EMBEDDED_MODELS or not folder.is_dir():
        return model  # the embedded model is identified by qeval's version, a hub id by revision
    return checkpoint_identity(str(folder))


def run_settings(
    model: str, spec: CheckedSpec, device: str, tasks: list[str], options: LmEvalOptions
) -> dict[str, Any]:
    """The settings record of one run (see the module docstring)."""
    plan = spec.plan
    calibration = {}
    if plan.quantizer.needs_calibration(plan.options):  # bundled: keyed by qeval's version
        _, _, digest = read_passages(plan.options["calibration_file"])
        calibration = {"calibration_file_sha256": digest}
    return _json_safe(
        {
            "model": model_identity(model),
            "quantizer": spec.text,
            **calibration,
            "quantizer_version": plan.quantizer.version,
            "plugin": f"{plan.plugin.source} {plan.plugin.version}",
            "device": device,
            "tasks": sorted(set(tasks)),
            "model_args": options.model_args,
            "lm_eval": options.keyed,
            "qeval_version": _version("qeval"),
            "lm_eval_version": _version("lm_eval"),
        }
    )


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: old → new`` for each setting that differs, lm-eval options and model arguments
    one by one. ``tasks`` is left out: which tasks a run covers is read from its results."""
    changed = []
    for name in sorted((set(recorded) | set(current)) - {"tasks"}):
        old, new = recorded.get(name), current.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    changed.append(f"{key}: {_short(old.get(key))} → {_short(new.get(key))}")
        elif old != new:
            changed.append(f"{name}: {_short(old)} → {_short(new)}")
    return changed


def _short(value: Any) -> str:
    """A setting as the user wrote it, at most 40 characters (``--limit 20`` is read as 20.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = "none" if value is None else json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def recorded_settings(directory: Path, results: bytes) -> dict[str, Any] | None:
    """The settings recorded in ``directory`` for the results file whose bytes are ``results``,
    or None when unknown (no record, an unreadable one — not a regular file, over
    :data:`MAX_RECORD_BYTES` —, or one written for other results)."""
    try:
        record = json.loads(read_regular(directory / SETTINGS_FILE, MAX_RECORD_BYTES))
        matches = record["results_sha256"] == hashlib.sha256(results).hexdigest()
    except (OSError, ValueError, RecursionError, TypeError, KeyError):
        return None
    settings = record.get("settings")
    return settings if matches and isinstance(settings, dict) else None


def record_bytes(settings: dict[str, Any], results_sha256: str) -> bytes:
    """The content of ``qeval_run.json`` for ``settings`` and the results file's checksum."""
    record = {"format": FORMAT, "settings": settings, "results_sha256": results_sha256}
    return json.dumps(record, indent=2, sort_keys=True).encode()
