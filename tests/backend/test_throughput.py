"""What the backend records of a run's speed: tokens per second per request kind, and how busy
the machine was while it timed them (forced both ways: a load average, and a system without one)."""

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


def test_the_machine_load_is_the_mean_load_average_over_the_timed_calls(monkeypatch):
    loads = itertools.cycle([(1.0, 0, 0), (2.5, 0, 0), (3.0, 0, 0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    meter = Throughput()
    timed_calls(meter, [10, 20, 30])
    assert meter.machine_load() == {"load_average": 2.17, "cpus": os.cpu_count()}
    assert meter.record()["loglikelihood"]["tokens"] == 60


@pytest.mark.parametrize("error", [AttributeError, OSError])
def test_a_system_without_a_load_average_records_none(monkeypatch, error):
    def no_load():
        raise error("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_load)
    meter = Throughput()
    timed_calls(meter, [10])
    assert throughput.load_average() is None
    assert meter.machine_load() is None
    assert meter.record()["loglikelihood"]["tokens"] == 10


def test_nothing_timed_records_no_load():
    assert Throughput().machine_load() is None
