"""``qeval demo``'s CPU threads: one for the embedded model, torch's default otherwise."""

from __future__ import annotations

import torch

from qeval_plugins.cli.demo import cpu_threads, demo_threads


def test_the_embedded_model_runs_on_one_cpu_thread_and_others_are_left_alone():
    assert demo_threads("qeval-tiny", "cpu") == 1
    assert demo_threads("qeval-tiny", "cuda") is None
    assert demo_threads("/models/llama", "cpu") is None


def test_cpu_threads_are_restored_afterwards():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_a_scan_spec_that_cannot_be_scanned_fails_before_any_run(monkeypatch, capsys):
    """--scan is checked with the quantizer specs: no lm-eval run starts."""
    import pytest

    from qeval_plugins.cli import demo
    from qeval_plugins.cli.main import main

    def no_run(*args):
        raise AssertionError("a run started")

    monkeypatch.setattr(demo, "evaluate_quietly", no_run)
    for scan, message in [
        ("bnb-int8", "bnb-int8"),  # quantizes activations: swapping weights cannot carry that
        ("autoround", "has no skip= option"),
        ("rtn:bits=2:skip=layers.0", "qeval scan chooses skip= itself"),
    ]:
        assert main(["demo", "--quantizers", "none", "--scan", scan]) == 2
        error = capsys.readouterr().err
        assert error.startswith("qeval: error:") and message in error, error
        assert error.count("\n") == 1
    with pytest.raises(AssertionError, match="a run started"):  # 'none' skips only the scan
        main(["demo", "--quantizers", "none", "--scan", "none"])
