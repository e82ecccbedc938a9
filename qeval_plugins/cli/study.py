"""train a model family, sweep quantizers over it and write the seed-study report

Trains (or reuses, from $QEVAL_CACHE_DIR/family) a family of small Llama models on qeval's
synthetic world: the base recipe at every --sizes, five other recipes (weight decay, dropout,
gradient clipping, bf16, fp16) at size s, each from every --seeds. Then runs the sweep through
'qeval run' into OUTPUT/runs (finished runs are skipped, so the study resumes): qeval_sqnr for
RTN int4/3 and GPTQ 4/3 bits at every size and seed, bitsandbytes nf4/fp4 at sizes s and l, and
every spec (also RTN int8/2, fp4, nf4, mxfp4, mxint4, bitsandbytes int8) once at the largest
size; W4 and W8A8 with qeval_outliers for every recipe, W4 for its 25 % checkpoint; a
temperature sweep of none, bnb-nf4 and bnb-fp4 at the largest size. Fits the loss predictor
('qeval predict fit'), times generation per quantizer, and writes OUTPUT/README.md, charts and
numbers.json: each paper claim with what was measured, its seed spread and a verdict. With
--models (hub ids or paths, e.g. Pythia sizes on a GPU machine) nothing is trained and only the
size-series findings are measured. Exit status 1 when a run failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from qeval_plugins.core.arguments import comma_list, positive_int
from qeval_plugins.core.errors import QevalError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="reports/seed-study", help="report folder (default: %(default)s)"
    )
    parser.add_argument(
        "--sizes", default="xs,s,m,l", help="family sizes, smallest first (default: %(default)s)"
    )
    parser.add_argument("--seeds", default="1,2", help="training seeds (default: %(default)s)")
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps per model (default 180)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--jobs", type=positive_int, default=1, help="qeval run processes at once (default 1)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated hub ids or paths, smallest first: study these instead of training",
    )
    parser.add_argument(
        "--quantizers",
        default=None,
        help="comma-separated specs for the size series on every seed, instead of the "
        "study's list (a quicker study; findings whose specs are missing are not measured)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the existing runs; train and run nothing",
    )


def run(args: argparse.Namespace) -> int:
    """The study; 1 when a sweep group failed (one line each on stderr, after the report)."""
    from qeval_plugins.study.runner import StudySettings, run_study

    settings = StudySettings(
        output=Path(args.output),
        sizes=tuple(comma_list(args.sizes)),
        seeds=parse_seeds(args.seeds),
        steps=args.steps,
        device=args.device,
        jobs=args.jobs,
        models=tuple(comma_list(args.models)) if args.models else (),
        specs=tuple(comma_list(args.quantizers)) if args.quantizers else (),
    )
    check_settings(settings)
    settings = replace(settings, sizes=smallest_first(settings.sizes))
    if args.report_only:
        check_runs_exist(settings.runs_dir)
    failures = run_study(settings, report_only=args.report_only)
    for line in failures:
        print(f"qeval: error: {line}", file=sys.stderr)
    return 1 if failures else 0


def parse_seeds(text: str) -> tuple[int, ...]:
    seeds = []
    for item in comma_list(text):
        if not (item.isascii() and item.isdecimal()):
            raise QevalError(f"--seeds takes whole numbers separated by commas, got '{item}'.")
        seeds.append(int(item))
    if not seeds or len(set(seeds)) != len(seeds):
        raise QevalError("--seeds must name at least one seed, each once.")
    return tuple(seeds)


def smallest_first(sizes: tuple[str, ...]) -> tuple[str, ...]:
    """Family sizes in the family's order (the size findings compare neighbours); given models
    (names not of the family) stay in the order given."""
    from qeval_plugins.study.family import SIZES

    order = list(SIZES)
    return tuple(sorted(sizes, key=order.index)) if set(sizes) <= set(order) else sizes


def check_runs_exist(runs_dir: Path) -> None:
    """--report-only needs runs to report on."""
    if not any(runs_dir.glob("*/*/results.json")):
        raise QevalError(
            f"--report-only: no runs in {runs_dir}; run 'qeval study' (without --report-only) "
            "first, with the same --output."
        )


def check_settings(settings) -> None:
    """One line for a bad size, spec, device or --output before anything runs."""
    from qeval_plugins.study.family import SIZES
    from qeval_plugins.sweep.specs import check_spec_text

    if not settings.models:
        unknown = [size for size in settings.sizes if size not in SIZES]
        if unknown or not settings.sizes:
            raise QevalError(
                f"unknown --sizes '{','.join(unknown)}'; choose from {', '.join(SIZES)}."
            )
        if "s" not in settings.sizes:
            raise QevalError("--sizes must include s: the recipes are compared at size s.")
    if settings.device not in ("cpu", "cuda") and not settings.device.startswith("cuda:"):
        raise QevalError(f"--device must be cpu or cuda, got '{settings.device}'.")
    if settings.output.exists() and not settings.output.is_dir():
        raise QevalError(f"--output '{settings.output}' is a file; give a folder.")
    for spec in settings.specs:
        check_spec_text(spec, settings.device)
    if settings.models and settings.steps is not None:
        raise QevalError("--steps sets the family's training; with --models nothing is trained.")
    for model in settings.models:
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
            raise QevalError(
                f"--models: '{model}' is no model folder; give a folder with config.json or a "
                "hub id such as EleutherAI/pythia-70m."
            )
