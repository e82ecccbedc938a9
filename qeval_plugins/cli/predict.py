"""predict quantization damage from cheap features; fit the predictor on qeval runs

Two forms. 'qeval predict fit RUNS... --out predictor.json [--target T]' learns from 'qeval
run' outputs that measured qeval_sqnr: one row per (model, spec), cheap features (parameter
count, unquantized NLL, the weight SQNR of the spec's round-to-nearest twin, format descriptors,
bits per parameter, and the NLL under Gaussian weight noise of the same per-layer SQNR and at 20
and 10 dB), a random forest, and the leave-one-model-out and leave-one-family-out errors of the
forest and two transparent baselines (linear on SQNR; the noise-equivalent ΔNLL). --target is
delta_nll (the runs' ΔNLL on qeval_sqnr, nats per token; the default), a quantizer's name (its
runs' ΔNLL, predicted from its RTN twin's features, e.g. gptq) or a task's name (its main
metric).

'qeval predict MODEL --quantizers SPECS --predictor predictor.json' computes only the cheap
features on MODEL (one short pass per spec, cached) and prints the predicted value per spec
with the trees' spread, flags what lies outside the training range, and compares the time it
took with what evaluating the specs for real costs (from the training runs' recorded times).
A predictor file is JSON data, never code.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable

FIT = "fit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``qeval predict``'s arguments: ``fit RUNS...`` or ``MODEL``, and the options of both."""
    parser.usage = (
        "%(prog)s fit RUNS... --out FILE [--target T] [--device D]\n"
        "       %(prog)s MODEL --quantizers SPECS --predictor FILE [--device D]"
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="fit RUNS... | MODEL",
        help="'fit' and the qeval run output folders (or results files) to learn from; or the "
        "model (path, hub id in the local cache, or qeval-tiny) to predict for",
    )
    parser.add_argument("--out", "-o", default=None, help="fit: the predictor file to write")
    parser.add_argument(
        "--target",
        default="delta_nll",
        help="fit: delta_nll (default), a quantizer name (its runs' ΔNLL) or a task name",
    )
    parser.add_argument(
        "--quantizers", default=None, metavar="SPECS", help="predict: comma-separated specs"
    )
    parser.add_argument("--predictor", default=None, help="predict: the predictor file to read")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """``fit`` or predict, by the first positional argument."""
    from qeval_plugins.core.plan import check_device

    check_device(args.device)
    if args.paths[0] == FIT:
        return _fit(args)
    return _predict(args)


def _fit(args: argparse.Namespace) -> int:
    from qeval_plugins.predict.fitting import fit_predictor
    from qeval_plugins.predict.predictor_file import write_predictor

    runs = args.paths[1:]
    if not runs:
        raise QevalError("qeval predict fit needs the run folders to learn from")
    if not args.out:
        raise QevalError("qeval predict fit needs --out FILE, the predictor file to write")
    if args.quantizers or args.predictor:
        raise QevalError("--quantizers and --predictor belong to 'qeval predict MODEL', not fit")
    folder = Path(args.out).expanduser().parent
    if not folder.is_dir():
        raise QevalError(
            f"--out {printable(args.out)}: folder {printable(str(folder))} does not exist; "
            "create it or give another path"
        )
    fitted = fit_predictor(
        runs, args.target, args.device, progress=lambda line: print(line, file=sys.stderr)
    )
    for line in fitted.warnings:
        print(f"warning: {line}", file=sys.stderr)
    write_predictor(args.out, fitted.predictor)
    print("\n".join(fit_summary(fitted)))
    print(f"wrote {printable(args.out)}", file=sys.stderr)
    return 0


def fit_summary(fitted) -> list[str]:
    """The lines ``qeval predict fit`` prints: rows, target, and the validation table."""
    predictor = fitted.predictor
    lines = [
        f"{_plural(predictor.rows, 'row')}: {_plural(len(predictor.models), 'model')}, "
        f"{_plural(len(predictor.families), 'family', 'families')} "
        f"({', '.join(predictor.families)}); target "
        f"{predictor.target_label}; features in {fitted.feature_seconds:.1f} s",
        "",
        f"{'held out':<22}{'predictor':<24}{'MAE':>10}{'RMSE':>10}",
    ]
    names = {
        "forest": f"forest ({len(predictor.forest.trees)} trees)",
        "linear_sqnr": "linear on SQNR",
        "noise_equivalent": "noise-equivalent ΔNLL",
    }
    for key, title in (
        ("leave_one_model_out", "one model"),
        ("leave_one_family_out", "one family"),
    ):
        scores = predictor.validation.get(key)
        if not scores:
            lines.append(f"{title:<22}{'(needs two or more; not measured)':<44}")
            continue
        for name, label in names.items():
            lines.append(
                f"{title:<22}{label:<24}{scores[name]['mae']:>10.4g}{scores[name]['rmse']:>10.4g}"
            )
            title = ""
    return lines


def _predict(args: argparse.Namespace) -> int:
    from qeval_plugins.predict.predicting import forecast
    from qeval_plugins.predict.predictor_file import read_predictor

    if len(args.paths) != 1:
        raise QevalError(
            f"qeval predict takes one MODEL (or 'fit RUNS...'), got {len(args.paths)} paths"
        )
    if not args.quantizers or not args.predictor:
        raise QevalError("qeval predict MODEL needs --quantizers SPECS and --predictor FILE")
    if args.out or args.target != "delta_nll":
        raise QevalError("--out and --target belong to 'qeval predict fit'")
    started = time.perf_counter()
    predictor = read_predictor(args.predictor)
    specs = list(dict.fromkeys(spec.strip() for spec in args.quantizers.split(",") if spec.strip()))
    if not specs:
        raise QevalError("--quantizers names no spec")
    result = forecast(args.paths[0], specs, predictor, args.device)
    print("\n".join(forecast_lines(result, predictor, time.perf_counter() - started)))
    return 0


def forecast_lines(result, predictor, seconds: float) -> list[str]:
    """The lines ``qeval predict`` prints: one per spec, the range flags and the cost."""
    width = max([28, *(len(printable(spec.spec)) + 2 for spec in result.specs)])
    lines = [
        f"{result.model} ({_count(result.params)} parameters, family {result.family}): "
        f"predicted {predictor.target_label}",
        "",
        f"{'spec':<{width}}{'RTN twin':<22}{'forest':>10}{'± spread':>10}"
        f"{'lin. SQNR':>11}{'noise-eq.':>11}  note",
    ]
    for spec in result.specs:
        note = "outside training range: " + ", ".join(spec.outside) if spec.outside else ""
        baselines = [spec.baselines.get(name) for name in ("linear_sqnr", "noise_equivalent")]
        lines.append(
            f"{printable(spec.spec):<{width}}{spec.twin.label:<22}{spec.value:>10.4g}"
            f"{spec.spread:>10.3g}"
            + "".join(
                f"{value:>11.4g}" if value is not None else f"{'—':>11}" for value in baselines
            )
            + (f"  {note}" if note else "")
        )
    if result.model_outside:
        lines.append(
            f"model outside the training range: {', '.join(result.model_outside)} "
            f"(trained on {_plural(len(predictor.models), 'model')}: "
            f"{', '.join(Path(model).name for model in predictor.models[:3])}"
            f"{', ...' if len(predictor.models) > 3 else ''})"
        )
    lines.append("")
    known = [spec for spec in result.specs if spec.evaluation_seconds is not None]
    missing = [spec.spec for spec in result.specs if spec.evaluation_seconds is None]
    lines.append(
        f"cost: features {result.feature_seconds:.1f} s (qeval predict in all {seconds:.1f} s, "
        "Python's and torch's start-up not counted)"
    )
    if known:
        total = sum(spec.evaluation_seconds for spec in known)
        parts = ", ".join(f"{spec.spec} ≈ {spec.evaluation_seconds:.0f} s" for spec in known)
        lines.append(
            f"quantize + evaluate for real ≈ {total:.0f} s: {parts} (the training runs' recorded "
            f"times, scaled by parameter count)"
            + ("" if missing else f"; ratio {seconds / total:.2f}")
        )
    if missing:
        lines.append(f"no training run recorded the evaluation time of {', '.join(missing)}")
    return lines


def _plural(count: int, word: str, plural: str | None = None) -> str:
    """``1 model``, ``2 models``."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _count(params: float) -> str:
    """1.31 M, 6.74 B."""
    if not math.isfinite(params) or params <= 0:
        return "?"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if params >= size:
            return f"{params / size:.3g} {unit}"
    return f"{params:.0f}"
