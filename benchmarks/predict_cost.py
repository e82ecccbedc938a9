"""What ``qeval predict`` costs next to the evaluation it replaces (a figure, not a timed test).

Three steps, each a fresh ``qeval`` process timed by wall clock (``time.perf_counter`` around
``subprocess.run``, Python start-up and imports included), each with its own empty
``$QEVAL_CACHE_DIR`` so that no step reuses another's cached work:

1. evaluate — ``qeval run --model MODEL --quantizers SPECS --tasks qeval_sqnr``: quantize and
   evaluate every spec for real, what a prediction stands in for;
2. fit — ``qeval predict fit`` on those runs (done once per predictor, so not in the ratio);
3. predict — ``qeval predict MODEL --quantizers SPECS`` with an empty feature cache, as on a model
   the predictor never saw (model load, one reference pass, two fixed-radius noise passes, and
   per spec the RTN twin's weight SQNR and one noise pass); then once more with the features
   cached.

Printed: the seconds of each step and ratio = predict (cold) / evaluate; the goal is ≤ 0.2.

    python benchmarks/predict_cost.py                          # qeval-tiny, rtn 8/4/3/2 bits
    python benchmarks/predict_cost.py --model PATH --quantizers rtn:bits=4,bnb-nf4 --device cuda
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.2


def timed(argv: list[str], cache: Path) -> tuple[float, str]:
    """Wall seconds of ``qeval ARGV`` in a fresh process with ``cache`` as its cache folder,
    and its standard output; exits on failure."""
    env = {**os.environ, "QEVAL_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "qeval_plugins.cli.main", *argv]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--model", default="qeval-tiny")
    parser.add_argument("--quantizers", default="rtn:bits=8,rtn:bits=4,rtn:bits=3,rtn:bits=2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        runs, predictor = root / "runs", root / "predictor.json"
        common = ["--quantizers", args.quantizers, "--device", args.device]
        evaluate, _ = timed(
            ["run", "--model", args.model, *common, "--tasks", "qeval_sqnr", "--output", str(runs)],
            root / "cache-evaluate",
        )
        fit, _ = timed(["predict", "fit", str(runs), "--out", str(predictor)], root / "cache-fit")
        predict = [["predict", args.model, *common, "--predictor", str(predictor)]]
        cold, printed = timed(predict[0], root / "cache-predict")
        warm, _ = timed(predict[0], root / "cache-predict")
    specs = len(args.quantizers.split(","))
    print(printed)
    print(f"{args.model}, {specs} specs ({args.quantizers}), device {args.device}")
    print(f"evaluate for real (qeval run, qeval_sqnr): {evaluate:8.1f} s")
    print(f"qeval predict fit (once per predictor):    {fit:8.1f} s")
    print(f"qeval predict, features computed:          {cold:8.1f} s   ratio {cold / evaluate:.2f}")
    print(f"qeval predict, features cached:            {warm:8.1f} s   ratio {warm / evaluate:.2f}")
    print(f"goal: ratio ≤ {GOAL} — {'met' if cold / evaluate <= GOAL else 'not met'}")


if __name__ == "__main__":
    main()
