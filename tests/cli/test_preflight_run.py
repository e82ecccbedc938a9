"""``qeval run`` refuses a spec that cannot run on the model or device in one line, at once,
before any lm_eval child starts (and so without a "No runs to report" and a warning after)."""

from __future__ import annotations

import time

import pytest

from qeval_plugins.cli.main import main
from qeval_plugins.sweep import unit as sweep_module


@pytest.fixture
def no_child(monkeypatch):
    """Fail the test if a run's lm_eval child would start."""

    def started(command, log, env=None):
        raise AssertionError(f"an lm_eval child started: {command}")

    monkeypatch.setattr(sweep_module, "run_child", started)
    monkeypatch.delenv("QEVAL_DEBUG", raising=False)


def qeval_run(tmp_path, quantizers: str, device: str = "cpu") -> list[str]:
    argv = ["run", "--model", "qeval-tiny", "--quantizers", quantizers, "--tasks", "qeval_sqnr"]
    return [*argv, "--output", str(tmp_path / "runs"), "--device", device]


@pytest.mark.parametrize(
    ("quantizers", "line"),
    [
        (
            "none,rtn:bits=4:skip=foo.*",
            "qeval: error: rtn:bits=4:skip=foo.* on qeval-tiny: skip pattern 'foo.*' matches no "
            "layer of the model (its linear layers are named like model.layers.0.mlp.down_proj): "
            "fix the pattern.",
        ),
        (
            "none,gptq:kernel=marlin",
            "qeval: error: gptq:kernel=marlin on qeval-tiny: kernel=marlin needs a CUDA GPU (this "
            "run is on cpu); use kernel=auto or torch_fused on CPU.",
        ),
    ],
)
def test_a_spec_the_run_cannot_use_fails_at_once_in_one_line(
    tmp_path, capsys, no_child, quantizers, line
):
    started = time.perf_counter()
    code = main(qeval_run(tmp_path, quantizers))
    took = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [line]
    assert "No runs to report" not in out + err
    assert took < 30  # no lm_eval child: seconds, not the minute a run takes to fail
    assert not (tmp_path / "runs").exists()  # no run began, no empty --output folder left


def test_qeval_scan_and_demo_check_before_their_first_run(capsys, monkeypatch):
    from qeval_plugins.cli import demo as demo_module
    from qeval_plugins.evals.scan import runner

    def started(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(runner, "run_scan", started)
    monkeypatch.setattr(demo_module, "evaluate_quietly", started)
    monkeypatch.delenv("QEVAL_DEBUG", raising=False)
    line = (
        "qeval: error: gptq:kernel=marlin on qeval-tiny: kernel=marlin needs a CUDA GPU (this "
        "run is on cpu); use kernel=auto or torch_fused on CPU."
    )
    assert main(["scan", "--model", "qeval-tiny", "--quantizer", "gptq:kernel=marlin"]) == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert main(["demo", "--quantizers", "none,gptq:kernel=marlin", "--scan", "none"]) == 2
    assert capsys.readouterr().err.splitlines() == [line]
