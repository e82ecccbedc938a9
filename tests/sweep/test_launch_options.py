"""The launcher options as read from the command line: sbatch's time and memory formats, the
GPU options that need a GPU device, and the summary of a sweep stopped by Ctrl-C."""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from qeval_plugins import QevalError
from qeval_plugins.sweep.launch_options import OWN_OPTIONS, _slurm_mem, _slurm_time, make_launcher
from qeval_plugins.sweep.progress import NOT_STARTED, SweepProgress
from qeval_plugins.sweep.unit import Outcome


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("240", 240),  # MINUTES
        ("04:30", 5),  # MM:SS, as sbatch reads it (4 min 30 s, rounded up)
        ("04:00:00", 240),  # HH:MM:SS
        ("48:00:00", 2880),
        ("1-2", 1560),  # D-HH: a day and two hours
        ("1-12:30", 2190),  # D-HH:MM
        ("1-00:00:01", 1441),  # D-HH:MM:SS
    ],
)
def test_slurm_time_reads_sbatchs_formats(text, minutes):
    assert _slurm_time(text) == minutes


@pytest.mark.parametrize("text", ["25:99", "4:60:00", "1-24", "1-99:99:99", "1-2:3:4:5", "x", "-5"])
def test_a_slurm_time_out_of_range_or_not_sbatchs_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be sbatch's --time"):
        _slurm_time(text)


@pytest.mark.parametrize("text", ["0", "0:59"])
def test_a_slurm_time_under_a_minute_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="at least one minute"):
        _slurm_time(text)


def test_slurm_mem_is_a_size():
    assert _slurm_mem("64G") == "64G" and _slurm_mem("500m") == "500M" and _slurm_mem("2048")
    for text in ("lots", "0G", "64GB", "1.5G"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a size such as 64G"):
            _slurm_mem(text)


def options(**given) -> argparse.Namespace:
    defaults = {name: value for own in OWN_OPTIONS.values() for name, value in own.items()}
    return argparse.Namespace(
        **{"launcher": "local", "output": "runs", "lm_eval_args": [], **defaults, **given}
    )


def test_gpu_options_need_gpus_and_a_gpu_device():
    with pytest.raises(QevalError, match="--gpus-per-run needs --gpus"):
        make_launcher(options(gpus_per_run=1), "cpu")  # given, even at its default value
    with pytest.raises(QevalError, match="--ray-gpus-per-run 1 gives runs GPUs, but --device is"):
        make_launcher(options(launcher="ray", ray_gpus_per_run=1), "cpu")


def test_the_summary_of_a_stopped_sweep_counts_units_never_started():
    progress = SweepProgress(Console(file=io.StringIO()), [])
    outcomes = [
        Outcome("done", "in 1.0 s"),
        Outcome("interrupted", "stopped by Ctrl-C; nothing was installed"),
        Outcome("interrupted", NOT_STARTED),
        Outcome("interrupted", NOT_STARTED),
    ]
    assert progress.summary(outcomes) == "sweep: 1 done, 1 interrupted, 2 not started"
