"""What a cluster launcher is asked for, as plain data: read from ``qeval run``'s options by
:mod:`.launch_options`, taken by :class:`~.slurm.SlurmLauncher` and
:class:`~.ray_cluster.RayLauncher`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SlurmSettings:
    """The SLURM job array's request, per unit (one array task each).

    ``time`` is sbatch's ``--time`` in minutes; ``mem`` sbatch's ``--mem`` as given (``64G``);
    ``extra`` more sbatch parameters (``--slurm-arg account=proj`` -> ``{"account": "proj"}``);
    ``detach``: submit and exit (the same command later collects); ``local``: run the array as
    local processes through submitit's local executor (a SLURM sweep tried on one machine);
    ``folder``: submitit's folder (pickled units, each task's stdout/stderr), under ``--output``."""

    folder: Path
    partition: str | None = None
    time: int = 240
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    detach: bool = False
    local: bool = False


@dataclass(frozen=True)
class RaySettings:
    """Each unit as a Ray task: ``address`` (``auto``, ``HOST:PORT``; None: start a local Ray
    instance), the GPUs and CPUs each task requests, and how often a task whose worker died is
    retried (Ray's ``max_retries``)."""

    address: str | None = None
    gpus_per_run: float = 0
    cpus_per_run: float = 1
    retries: int = 2
