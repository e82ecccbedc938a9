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

    @contextmanager
    def timing(self, kind: str):
        """Time the body; the caller adds the token count through the yielded list."""
        counted: list[int] = []
        started = time.perf_counter()
        try:
            yield counted
        finally:
            totals = self.kinds.setdefault(kind, {"tokens": 0, "seconds": 0.0})
            totals["tokens"] += sum(counted)
            totals["seconds"] += time.perf_counter() - started
            if (load := load_average()) is not None:
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
        """How busy the machine was while the timed calls ran: ``load_average``, the mean of the
        1-minute load average (runnable processes, this one included) sampled at the end of each
        call, and ``cpus``, the logical CPUs; None where the system keeps no load average or
        nothing was timed. Tokens/s measured at load 6 on 2 CPUs is not the speed at load 1."""
        if not self.load_samples:
            return None
        return {
            "load_average": round(statistics.fmean(self.load_samples), 2),
            "cpus": os.cpu_count(),
        }


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
