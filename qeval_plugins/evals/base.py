"""What qeval's own lm-eval task classes share: a custom request type only --model qeval answers."""

from __future__ import annotations

import inspect
from typing import Any

from lm_eval.api.task import ConfigurableTask

from qeval_plugins.core.errors import QevalError, install_excepthook

install_excepthook()  # the task may run under --model hf, where qeval's backend is never imported


class QevalTask(ConfigurableTask):
    """A YAML-configured task whose requests have type ``REQUEST_TYPE`` (a QevalLM method)."""

    REQUEST_TYPE = ""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        # the YAML's ``class`` key selects this class; it is not a TaskConfig field
        config = {key: value for key, value in (config or {}).items() if key != "class"}
        super().__init__(config=config, **kwargs)

    def build_all_requests(self, *args: Any, **kwargs: Any) -> None:
        require_qeval_backend(self.REQUEST_TYPE, self.config.task)
        self.prepare()
        super().build_all_requests(*args, **kwargs)

    def prepare(self) -> None:
        """Read settings from ``self.config.metadata`` before requests are built (validate here)."""


def require_qeval_backend(request_type: str, task: str) -> None:
    """Fail at once, in one line, when the model cannot answer ``request_type``.

    lm-eval does not hand the model to a task; the evaluator's local ``lm`` is found on the call
    stack. If it cannot be found (another lm-eval version), the run goes on and lm-eval's own
    error about the missing request handler is the fallback.
    """
    frame = inspect.currentframe()
    for _ in range(8):
        frame = frame.f_back if frame else None
        if frame is None:
            return
        lm = frame.f_locals.get("lm")
        if lm is not None and hasattr(lm, "tokenizer"):
            if not hasattr(lm, request_type):
                raise QevalError(
                    f"task {task} needs --model qeval (got {type(lm).__name__}); run "
                    f"lm_eval --model qeval --model_args pretrained=MODEL,quantizer=NAME ..."
                )
            return
