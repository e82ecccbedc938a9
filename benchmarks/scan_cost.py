"""What ``qeval scan`` costs, and how it grows with the number of units.

For one model and spec, the scan runs twice, ``--unit block`` and ``--unit layer`` (many more
units), with the same texts. From each run's ``timing`` and ``reference`` records it prints: the
reference pass (done once per scan), the quantization of the one copy, the mean time per unit
(weights swapped in place, measured, restored), the verification (three real quantized runs) and
the total; then seconds per unit side by side, and a unit's cost against one model load +
quantization — what a scan that reloaded the model per unit would pay on top of measuring. A
first block scan warms the process up (imports, the first load) and is not shown.

    python benchmarks/scan_cost.py                                   # qeval-tiny, rtn:bits=3
    python benchmarks/scan_cost.py --model PATH --quantizer hqq --limit 8
"""

from __future__ import annotations

import argparse

from qeval_plugins.evals.scan.runner import ScanRequest, run_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qeval-tiny")
    parser.add_argument("--quantizer", default="rtn:bits=3")
    parser.add_argument("--limit", type=int, default=8, help="texts (bundled passages)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rows = []
    for unit in ("block", "block", "layer"):  # the first block scan warms up (imports, first load)
        result = run_scan(
            ScanRequest(
                args.model,
                args.quantizer,
                unit=unit,
                device=args.device,
                limit=args.limit,
                max_tokens=args.max_tokens,
            )
        )
        timing = result["timing"]
        load_and_quantize = timing["model_load_seconds"] + timing["quantize_seconds"]
        rows.append(
            (
                unit,
                len(result["units"]),
                result["reference"]["seconds"],
                timing["quantize_seconds"],
                timing["unit_seconds_mean"],
                result["verification"]["seconds"],
                timing["total_seconds"],
                timing["unit_seconds_mean"] / load_and_quantize,
            )
        )
    print(
        f"\n{args.model} · {args.quantizer}, {args.limit} texts × ≤{args.max_tokens} tokens, "
        f"{args.device}"
    )
    print(
        "| unit | units | reference s | quantize s | s / unit | verify s | total s | unit/load+q |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for unit, count, ref, quant, per_unit, verify, total, ratio in rows[1:]:
        print(
            f"| {unit} | {count} | {ref:.2f} | {quant:.2f} | {per_unit:.3f} | {verify:.2f} | "
            f"{total:.2f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
