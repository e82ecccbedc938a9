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


def test_a_backend_made_without_a_device_leaves_the_choice_to_hflm(monkeypatch):
    """Python callers may leave ``device`` out: HFLM's own default applies (handing it
    ``device=None`` instead would fail HFLM's ``isinstance(device, str)`` check)."""
    from lm_eval.models.huggingface import HFLM

    from qeval_plugins.backend.lm import QevalLM

    class Reached(Exception):
        pass

    def reached(self, **kwargs):
        raise Reached(kwargs)

    monkeypatch.setattr(HFLM, "__init__", reached)
    with pytest.raises(Reached) as caught:
        QevalLM(pretrained="qeval-tiny", quantizer="none")
    assert "device" not in caught.value.args[0]
    with pytest.raises(Reached) as caught:
        QevalLM(pretrained="qeval-tiny", quantizer="none", device="cpu")
    assert caught.value.args[0]["device"] == "cpu"
