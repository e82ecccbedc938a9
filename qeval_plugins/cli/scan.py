"""rank layers by sensitivity to a quantizer; recommend which to keep

Quantizes one layer (or decoder block) at a time and measures the KL divergence from the
unquantized model over bundled passages, then recommends the units to keep unquantized and
verifies that choice. Progress goes to stderr (one line per step and per unit), the ranking table
and the verdict to stdout; with --output DIR the whole result is written atomically to
DIR/scan.json, which 'qeval report DIR' shows as its "Layer sensitivity" section. Exit status 1
when the recommendation does not verify.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qeval_plugins.core.arguments import positive_float, positive_int
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.text import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``qeval scan`` options."""
    from qeval_plugins.core.plan import MODEL_DTYPES

    parser.add_argument("--model", required=True, help="model path, hub id or qeval-tiny")
    parser.add_argument(
        "--quantizer",
        required=True,
        help="one quantizer spec NAME[:option=value...] of a quantizer that has a skip= option "
        "(qeval scan sets it), e.g. rtn:bits=3",
    )
    parser.add_argument(
        "--unit",
        choices=("layer", "block"),
        default="layer",
        help="quantize one linear layer or one decoder block at a time (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=MODEL_DTYPES,
        help="model dtype (default: auto, the checkpoint's own)",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="bundled passages used (default: all 40)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=256,
        help="tokens scored per passage (default: %(default)s)",
    )
    parser.add_argument(
        "--target-bits",
        type=positive_float,
        default=None,
        help="keep the most sensitive units unquantized up to this many bits per quantized "
        "weight (default: the fewest units holding half the summed single-unit KL)",
    )
    parser.add_argument("--output", default=None, help="folder to write scan.json into")


def run(args: argparse.Namespace) -> int:
    """Scan, print the table and the verdict, write ``scan.json``; 0 when the recommendation
    verified (better than all-quantized), else 1."""
    from rich.console import Console

    from qeval_plugins.backend.preflight import preflight_spec
    from qeval_plugins.evals.scan.runner import ScanRequest, run_scan
    from qeval_plugins.report.scan import render_scans, summarize
    from qeval_plugins.storage.scan_result import json_ready, write_scan

    folder = _output_folder(args.output)
    request = ScanRequest(
        model=args.model,
        spec=args.quantizer,
        unit=args.unit,
        device=args.device,
        dtype=args.dtype,
        limit=args.limit,
        max_tokens=args.max_tokens,
        target_bits=args.target_bits,
    )
    preflight_spec(args.model, args.quantizer, args.device, {"dtype": args.dtype})
    result = run_scan(request, progress=lambda line: print(printable(line), file=sys.stderr))
    path = folder / "scan.json" if folder is not None else None
    if path is not None:
        write_scan(path, result)
    render_scans([summarize(json_ready(result), str(path or "scan"))], [], Console())
    if path is not None:
        print(f"wrote {printable(str(path))}", file=sys.stderr)
    if result["verification"]["improves"]:
        return 0
    print(
        "qeval: the recommendation did not verify: no lower KL than all-quantized", file=sys.stderr
    )
    return 1


def _output_folder(output: str | None) -> Path | None:
    """``--output`` made (parents too) before the scan's minutes, or None; a file there is one
    error line."""
    if output is None:
        return None
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise QevalError(f"--output {printable(output)} is a file; give a folder for scan.json.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise QevalError(f"cannot create --output {printable(output)}: {error.strerror}") from error
    return folder
