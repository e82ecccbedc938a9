"""What the backend records of a run's speed: tokens per second per request kind, and how busy
the rest of the machine was while it timed them — from /proc/stat where there is one, else the
load average, else nothing (each forced here, whatever machine runs the test)."""

from __future__ import annotations

import itertools
import os

import pytest

from qeval_plugins.backend import throughput
from qeval_plugins.backend.throughput import Throughput


def timed_calls(meter: Throughput, tokens: list[int]) -> None:
    for count in tokens:
        with meter.timing("loglikelihood") as counted:
            counted.append(count)


def fake_clocks(monkeypatch, wall: list[float], own: list[float], busy: list[float | None]):
    """Each timed call reads perf_counter, process_time and the machine's busy seconds twice."""
    monkeypatch.setattr(throughput.time, "perf_counter", iter(wall).__next__)
    monkeypatch.setattr(throughput.time, "process_time", iter(own).__next__)
    monkeypatch.setattr(throughput, "machine_busy_seconds", iter(busy).__next__)


def test_other_work_is_the_machines_busy_time_minus_this_process_per_timed_second(monkeypatch):
    # call 1: 2 s wall, the machine busy 3 CPU-s, this process 1 CPU-s -> 2 CPU-s of others
    # call 2: 2 s wall, the machine busy 1 CPU-s, all of it this process's -> 0
    fake_clocks(monkeypatch, [0, 2, 10, 12], [0, 1, 5, 6], [100, 103, 110, 111])
    meter = Throughput()
    timed_calls(meter, [10, 30])
    assert meter.machine_load() == {"other_cpus": 0.5, "cpus": os.cpu_count()}  # 2 CPU-s / 4 s
    assert meter.record()["loglikelihood"] == {"tokens": 40, "seconds": 4.0, "tokens_per_s": 10.0}


def test_without_proc_stat_the_load_average_is_recorded(monkeypatch):
    fake_clocks(monkeypatch, [0, 1, 2, 3], [0, 1, 1, 2], [None, None, None, None])
    loads = itertools.cycle([(1.0, 0, 0), (2.5, 0, 0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    meter = Throughput()
    timed_calls(meter, [10, 20])
    assert meter.machine_load() == {"load_average": 1.75, "cpus": os.cpu_count()}


@pytest.mark.parametrize("error", [AttributeError, OSError])
def test_a_system_with_neither_records_none(monkeypatch, error):
    def no_load():
        raise error("no load average here")

    fake_clocks(monkeypatch, [0, 1], [0, 1], [None, None])
    monkeypatch.setattr(os, "getloadavg", no_load)
    meter = Throughput()
    timed_calls(meter, [10])
    assert throughput.load_average() is None
    assert meter.machine_load() is None
    assert meter.record()["loglikelihood"]["tokens"] == 10


def test_nothing_timed_records_no_load():
    assert Throughput().machine_load() is None


def test_busy_seconds_are_read_from_proc_stats_cpu_line(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    #                  user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1000 20 300 5000 70 4 6 50 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    monkeypatch.setattr(throughput, "PROC_STAT", str(stat))
    ticks = os.sysconf("SC_CLK_TCK")
    assert throughput.machine_busy_seconds() == pytest.approx(
        (1000 + 20 + 300 + 4 + 6 + 50) / ticks
    )
    for broken in ("", "intr 1 2 3\n", "cpu 1 2 x 4 5 6 7 8\n", "cpu 1 2\n"):
        stat.write_text(broken)
        assert throughput.machine_busy_seconds() is None
    monkeypatch.setattr(throughput, "PROC_STAT", str(tmp_path / "missing"))
    assert throughput.machine_busy_seconds() is None
