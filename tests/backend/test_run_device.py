"""lm_eval passes ``--device cuda:0`` when its command line names none; on a machine without a
CUDA GPU the backend runs on the CPU as lm-eval's ``hf`` model does (forced both ways), while a
device the user names and the machine lacks stays an error of the plan."""

from __future__ import annotations

import logging

import pytest
import torch

from qeval_plugins.backend.lm import LM_EVAL_DEFAULT_DEVICE, run_device


@pytest.mark.parametrize("cuda", [True, False])
def test_lm_evals_default_device_falls_back_to_the_cpu_only_without_a_gpu(
    monkeypatch, caplog, cuda
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with caplog.at_level(logging.WARNING, logger="qeval"):
        device = run_device(LM_EVAL_DEFAULT_DEVICE)
    assert device == (LM_EVAL_DEFAULT_DEVICE if cuda else "cpu")
    assert ("running on cpu" in caplog.text) is not cuda


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cpu", None])
def test_other_devices_are_passed_on_as_given(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device(device) == device
