"""Speed and memory the backend measures while lm-eval runs requests through it."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Any


class Throughput:
    """Accumulates tokens and wall seconds per request kind.

    tokens_per_s = Σ tokens / Σ seconds over every call of that kind. For ``loglikelihood`` the
    tokens are context + continuation tokens scored (rolling log-likelihood included); for
    ``generate`` they are the new tokens of the returned continuations, re-tokenized.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, float]] = {}
        self.load_samples: list[float] = []
        self.other_cpu_seconds = 0.0  # CPU time other processes used while calls were timed
        self.measured_seconds = 0.0  # wall time of the calls whose CPU time was measured

    @contextmanager
    def timing(self, kind: str):
        """Time the body; the caller adds the token count through the yielded list."""
        counted: list[int] = []
        busy_before, own_before = machine_busy_seconds(), time.process_time()
        started = time.perf_counter()
        try:
            yield counted
        finally:
            seconds = time.perf_counter() - started
            totals = self.kinds.setdefault(kind, {"tokens": 0, "seconds": 0.0})
            totals["tokens"] += sum(counted)
            totals["seconds"] += seconds
            busy_after = machine_busy_seconds()
            if busy_before is not None and busy_after is not None:
                own = time.process_time() - own_before
                self.other_cpu_seconds += max(busy_after - busy_before - own, 0.0)
                self.measured_seconds += seconds
            elif (load := load_average()) is not None:
                self.load_samples.append(load)

    def record(self) -> dict[str, Any]:
        field = {"loglikelihood": "tokens", "generate": "new_tokens"}
        return {
            kind: {
                field.get(kind, "tokens"): int(totals["tokens"]),
                "seconds": round(totals["seconds"], 4),
                "tokens_per_s": round(totals["tokens"] / totals["seconds"], 2)
                if totals["seconds"] > 0
                else None,
            }
            for kind, totals in self.kinds.items()
        }

    def machine_load(self) -> dict[str, Any] | None:
        """How busy the rest of the machine was while the calls were timed (tokens/s measured
        while other work holds the CPUs is not the speed on an idle machine), with ``cpus``, the
        logical CPUs:

        * ``other_cpus`` (Linux): CPUs' worth of work by other processes during the timed calls,
          Σ (machine busy CPU-seconds − this process's CPU-seconds) / Σ call seconds, from
          ``/proc/stat`` (user, nice, system, irq, softirq and steal time) and
          :func:`time.process_time`; 0 on an idle machine, 2 when two other busy processes
          shared it throughout;
        * else ``load_average``: the mean 1-minute load average at the end of each call (this
          process included, and smoothed over a minute, so blind to short bursts).

        None when neither is available or nothing was timed.
        """
        if self.measured_seconds > 0:
            other = self.other_cpu_seconds / self.measured_seconds
            return {"other_cpus": round(other, 2), "cpus": os.cpu_count()}
        if self.load_samples:
            load = statistics.fmean(self.load_samples)
            return {"load_average": round(load, 2), "cpus": os.cpu_count()}
        return None


PROC_STAT = "/proc/stat"
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal


def machine_busy_seconds() -> float | None:
    """CPU-seconds all CPUs have spent busy since boot (``/proc/stat``'s ``cpu`` line, in clock
    ticks of ``SC_CLK_TCK``), or None where there is no such file (macOS, Windows)."""
    try:
        with open(PROC_STAT, "rb") as stat:
            fields = stat.readline().split()
        ticks = [int(fields[1 + index]) for index in BUSY_FIELDS]
        per_second = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    if fields[0] != b"cpu" or per_second <= 0:
        return None
    return sum(ticks) / per_second


def load_average() -> float | None:
    """The system's 1-minute load average, or None where there is none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def peak_memory(device: str) -> dict[str, Any]:
    """Peak memory of the run: CUDA max allocated on a GPU, else the process's peak RSS (bytes)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return {"bytes": int(torch.cuda.max_memory_allocated()), "kind": "cuda_max_allocated"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"bytes": int(peak * scale), "kind": "cpu_peak_rss"}
