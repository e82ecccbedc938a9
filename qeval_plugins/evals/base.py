"""What qeval's own lm-eval task classes share: a custom request type only --model qeval answers,
and (:class:`TextTask`) one request per text carrying the task's settings."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from lm_eval.api.instance import Instance
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


RUN_LEVEL = "run"  # key of the per-document wrapper of a run-level value


def run_level(value: Any) -> dict[str, Any]:
    """A run-level figure (one value over all texts) as each document carries it: wrapped, so a
    sample log (``--log_samples``) never shows it as a per-document number and a paired test
    over documents never reads it as a mean over documents."""
    return {RUN_LEVEL: value}


def first_run_level(values: list[Any]) -> Any:
    """The aggregation of a :func:`run_level` figure: the value every document carries; None
    without any."""
    return values[0][RUN_LEVEL] if values else None


class TextTask(QevalTask):
    """One request per document's ``text``, carrying the task's settings: ``SETTINGS`` (a class
    with ``from_mapping``) read from the YAML's and ``--metadata``'s ``metadata``; the metrics'
    aggregations and directions are the class tables ``AGGREGATIONS`` and ``HIGHER_IS_BETTER``."""

    SETTINGS: ClassVar[Any] = None
    AGGREGATIONS: ClassVar[dict[str, Any]] = {}
    HIGHER_IS_BETTER: ClassVar[dict[str, Any]] = {}

    def prepare(self) -> None:
        self.settings = self.SETTINGS.from_mapping(dict(self.config.metadata or {}))

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        settings = dict(self.settings.__dict__)
        return Instance(
            request_type=self.REQUEST_TYPE,
            doc=doc,
            arguments=(doc["text"], settings),
            idx=0,
            **kwargs,
        )

    def aggregation(self) -> dict:
        return dict(self.AGGREGATIONS)

    def higher_is_better(self) -> dict:
        return dict(self.HIGHER_IS_BETTER)


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
