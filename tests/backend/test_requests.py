"""The backend's extension point: qeval's request types are answered by registered engines."""

from __future__ import annotations

import pytest

from qeval_plugins import QevalError
from qeval_plugins.backend.requests import handler_for, register_request_handler


def test_the_task_engines_register_their_request_types():
    from qeval_plugins.evals.sampling import engine as sampling
    from qeval_plugins.evals.sqnr import engine as sqnr

    assert handler_for("qeval_sqnr") is sqnr.run
    assert handler_for("qeval_sample") is sampling.run


def test_an_unregistered_request_type_is_one_line(monkeypatch):
    from qeval_plugins.backend import requests

    monkeypatch.setattr(requests, "_HANDLERS", {})
    with pytest.raises(QevalError, match="no qeval task engine answers 'qeval_sqnr' requests"):
        handler_for("qeval_sqnr")
    register_request_handler("qeval_sqnr", len)
    assert handler_for("qeval_sqnr") is len
