"""Every check before the first run: the runs a sweep makes (models × specs), their folders,
their settings, and the refusal of existing results made with other settings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.backend.checkpoints import checked_quantization, resolve_pretrained
from qeval_plugins.backend.preflight import preflight
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.kv_settings import check_head_dim, config_head_dim, take_kv_cache
from qeval_plugins.core.plan import check_dtype
from qeval_plugins.core.safe_read import read_regular
from qeval_plugins.storage.writable import check_writable_dir
from qeval_plugins.sweep.results import existing_state
from qeval_plugins.sweep.settings import LmEvalOptions, parse_lm_eval_args, run_settings
from qeval_plugins.sweep.specs import CheckedSpec, check_spec_text

MAX_CONFIG_BYTES = 16 << 20  # a model's config.json


def slug(text: str) -> str:
    """A folder-safe form of a model name or spec: ``rtn:bits=4`` -> ``rtn_bits-4``."""
    text = text.rstrip("/").replace("/", "--").replace(":", "_").replace("=", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


@dataclass(frozen=True)
class PlannedRun:
    model: str
    checked: CheckedSpec  # the quantizer spec, read and validated once for the whole sweep
    directory: Path

    @property
    def spec(self) -> str:
        """The quantizer spec as the user wrote it."""
        return self.checked.text

    @property
    def label(self) -> str:
        return f"{Path(self.model).name or self.model} × {self.spec}"


def plan_runs(models: list[str], specs: list[str], output: Path, device: str) -> list[PlannedRun]:
    """Read and validate every spec once and every model (no model is loaded); name each
    run's folder."""
    if not specs:
        raise QevalError("--quantizers names no quantizer; give specs such as none,bnb-nf4.")
    same_run: dict[tuple, str] = {}
    checked = [check_spec_text(spec, device) for spec in specs]
    for spec in checked:
        plan = spec.plan
        key = (plan.quantizer.name, tuple(sorted(plan.options.items())), plan.kv)
        if key in same_run:  # aliases, option order and defaults resolved
            raise QevalError(
                f"quantizer specs '{same_run[key]}' and '{spec.text}' are the same run "
                f"({plan.quantizer.name} with the same options and KV cache); give it once."
            )
        same_run[key] = spec.text
    repeated = sorted({model for model in models if models.count(model) > 1})
    if repeated:
        raise QevalError(f"--model '{repeated[0]}' is given twice; give each once.")
    runs = []
    for model in models:
        resolved = resolve_pretrained(model)  # a missing local path fails here, before any run
        head_dim = local_head_dim(resolved)
        for spec in checked:
            checked_quantization(resolved, spec.plan.quantizer.name)
            check_head_dim(spec.plan.kv, head_dim)
        name = Path(model).name if Path(model).exists() else model
        runs += [
            PlannedRun(model, spec, output / f"{slug(name)}__{slug(spec.text)}") for spec in checked
        ]
    names = [str(run.directory).lower() for run in runs]  # case-insensitive disks (macOS)
    if len(set(names)) != len(names):
        raise QevalError(
            "two runs would share a folder (models or specs that differ only in characters a "
            "folder name cannot hold); give each --model a distinct name."
        )
    return runs


def local_head_dim(pretrained: str) -> int | None:
    """The head dimension a local checkpoint's ``config.json`` states; None for a hub id or a
    config that cannot be read (loading reports that)."""
    try:
        raw = read_regular(Path(pretrained) / "config.json", MAX_CONFIG_BYTES)
        config = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return config_head_dim(config)


def check_model_args(specs: list[CheckedSpec], options: LmEvalOptions) -> None:
    """``--model_args`` must not override an option a spec sets (the run's folder would lie);
    its ``dtype`` must be a model dtype; its ``kv_*`` settings, with each spec's, must be valid
    (:func:`~qeval_plugins.core.kv_settings.take_kv_cache`)."""
    check_dtype(options.model_args.get("dtype"))
    for spec in specs:
        clash = sorted(set(spec.options) & {str(k).strip() for k in options.model_args})
        if clash:
            raise QevalError(
                f"--model_args sets '{clash[0]}', which quantizer spec '{spec.text}' sets too; "
                f"give quantizer options in the spec only."
            )
        take_kv_cache({**options.model_args, **spec.options})


def refuse_conflicts(runs: list[PlannedRun], settings: dict, tasks: list[str], output: Path):
    """One QevalError line naming the runs whose existing results this sweep would not reuse."""
    conflicts = []
    for run in runs:
        state, why = existing_state(run.directory, settings[run], tasks)
        if state == "conflict":
            conflicts.append(f"{run.label} ({why})")
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise QevalError(
            f"{output} holds results made with other settings: {'; '.join(conflicts[:3])}{more}. "
            f"Pass --force to recompute and replace them, or give another --output."
        )


def prepare(
    models: list[str],
    specs: list[str],
    tasks: list[str],
    output: Path,
    device: str,
    extra: list[str],
    force: bool,
) -> tuple[list[PlannedRun], dict, list[str]]:
    """Every check before the first run: (runs, settings per run, names the results must hold)."""
    from qeval_plugins.storage.cache_pruning import max_size
    from qeval_plugins.sweep.tasks import expected_results

    max_size()  # QEVAL_CACHE_MAX_SIZE: one line now, not in the first run that saves an entry
    runs = plan_runs(models, specs, output, device)
    options = parse_lm_eval_args(extra)
    check_model_args(list(dict.fromkeys(run.checked for run in runs)), options)
    expected = expected_results(tasks, options.include_path)
    settings = {
        run: run_settings(run.model, run.checked, device, expected, options) for run in runs
    }
    for run in runs:  # what needs the model and the device (skip= names, kernels)
        model_args = settings[run]["model_args"]
        preflight(
            resolve_pretrained(run.model),
            run.checked.plan,
            device,
            model_args.get("dtype"),
            model_args.get("revision"),
            shown=run.model,
        )
    check_writable_dir(output, "--output")  # the first thing written: no folder left by a refusal
    if not force:
        refuse_conflicts(runs, settings, expected, output)
    return runs, settings, expected
