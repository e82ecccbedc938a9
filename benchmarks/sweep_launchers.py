"""What running a sweep's units at once gains, and what each launcher's driver costs per unit
(figures, not a timed test).

Every measurement is one fresh ``qeval run`` process of qeval-tiny × SPECS on
``qeval_demo_facts --limit LIMIT`` on the CPU, timed by wall clock (``time.perf_counter`` around
``subprocess.run``: Python start-up, imports and the report included), each with its own empty
``--output`` and ``$QEVAL_CACHE_DIR`` so that nothing is reused between measurements.

1. Parallel gain: the four units one at a time with one torch thread each (the local launcher
   with a single one-thread slot, through the Python API) against ``--jobs 2`` (two units at
   once, one thread each, on two cores); goal: wall ratio ≤ 0.6. The default one-at-a-time
   sweep (``--jobs 1``: every core's threads for the one unit) is printed beside them.
2. Driver overhead: a one-unit sweep (``none``) through each launcher — local, ``--launcher ray``
   (a local Ray instance started and stopped by the driver), ``--launcher slurm --slurm-local``
   (submitit's local executor, polling every few seconds) — minus the local one: what the
   launcher adds to a unit, its start-up included. Under Ray, the four-unit sweep (two tasks at
   once) against ``--jobs 2`` gives the per-unit cost without the start-up:
   (ray − jobs 2) / 4.

    python benchmarks/sweep_launchers.py               # all measurements
    python benchmarks/sweep_launchers.py --skip-ray --skip-slurm
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPECS = "none,rtn:bits=4,rtn:bits=3,rtn:bits=2"
TASK = "qeval_demo_facts"
LIMIT = "8"
GOAL = 0.6
ONE_THREAD_SEQUENTIAL = """
import sys
from pathlib import Path
from rich.console import Console
from qeval_plugins.sweep.driver import sweep
from qeval_plugins.sweep.local import LocalLauncher, cpu_slots
one_thread = LocalLauncher(tuple(cpu_slots(1, 1)))
specs, task, output, limit = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
failures = sweep(["qeval-tiny"], specs, [task], output, "cpu", ["--limit", limit], False,
                 Console(), launcher=one_thread)
sys.exit(1 if failures else 0)
"""


def timed(command: list[str], scratch: Path) -> float:
    """Wall seconds of ``command`` with ``{output}`` replaced by a fresh folder under
    ``scratch`` and a fresh cache folder; exits on failure."""
    output = Path(tempfile.mkdtemp(dir=scratch)) / "runs"
    cache = Path(tempfile.mkdtemp(dir=scratch))
    env = {**os.environ, "QEVAL_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    argv = [str(output) if part == "{output}" else part for part in command]
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    return seconds


def qeval_run(specs: str, *launcher: str) -> list[str]:
    return [
        *(sys.executable, "-m", "qeval_plugins.cli.main", "run", "--model", "qeval-tiny"),
        *("--quantizers", specs, "--tasks", TASK, "--limit", LIMIT, "--device", "cpu"),
        *("--output", "{output}", *launcher),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        one_thread = [sys.executable, "-c", ONE_THREAD_SEQUENTIAL, SPECS, TASK, "{output}", LIMIT]
        sequential = timed(one_thread, scratch)
        jobs2 = timed(qeval_run(SPECS, "--jobs", "2"), scratch)
        default = timed(qeval_run(SPECS, "--jobs", "1"), scratch)
        print(f"4 units, one at a time, 1 thread each : {sequential:7.1f} s")
        print(f"4 units, --jobs 2, 1 thread each      : {jobs2:7.1f} s")
        print(f"4 units, --jobs 1 (all cores' threads): {default:7.1f} s")
        verdict = "met" if jobs2 / sequential <= GOAL else "NOT met"
        print(f"ratio --jobs 2 / one at a time        : {jobs2 / sequential:7.2f} "
              f"(goal <= {GOAL}: {verdict})")  # fmt: skip
        local = timed(qeval_run("none"), scratch)
        print(f"1 unit, local                         : {local:7.1f} s")
        if not args.skip_ray:
            ray_one = timed(qeval_run("none", "--launcher", "ray"), scratch)
            ray_four = timed(qeval_run(SPECS, "--launcher", "ray"), scratch)
            print(f"1 unit, ray (local instance)          : {ray_one:7.1f} s "
                  f"(+{ray_one - local:.1f} s over local)")  # fmt: skip
            print(f"4 units, ray, 2 tasks at once          : {ray_four:7.1f} s "
                  f"(+{(ray_four - jobs2) / 4:.1f} s per unit over --jobs 2)")  # fmt: skip
        if not args.skip_slurm:
            slurm = timed(qeval_run("none", "--launcher", "slurm", "--slurm-local"), scratch)
            print(f"1 unit, slurm --slurm-local (submitit) : {slurm:7.1f} s "
                  f"(+{slurm - local:.1f} s over local)")  # fmt: skip
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
