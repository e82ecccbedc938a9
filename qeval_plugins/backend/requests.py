"""The backend's extension point for qeval's own request types.

lm-eval answers a request of type ``T`` by calling ``lm.T(requests)``. ``QevalLM`` has one such
method per qeval request type; each hands the requests to the handler that the task engine
registered here when its task was loaded. The backend thus never imports the task engines (they
sit above it): an engine registers itself with :func:`register_request_handler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qeval_plugins.core.errors import QevalError

Handler = Callable[[Any, list], list]
_HANDLERS: dict[str, Handler] = {}


def register_request_handler(request_type: str, handler: Handler) -> None:
    """Answer requests of ``request_type`` with ``handler(lm, requests)`` (one result each)."""
    _HANDLERS[request_type] = handler


def handler_for(request_type: str) -> Handler:
    """The registered handler of ``request_type``; a QevalError when no task registered one."""
    try:
        return _HANDLERS[request_type]
    except KeyError:
        raise QevalError(
            f"no qeval task engine answers '{request_type}' requests; run qeval's tasks from "
            f"the folder 'qeval tasks-path' prints (lm_eval --include_path)."
        ) from None
