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
