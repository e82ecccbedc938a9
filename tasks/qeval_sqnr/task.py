"""Entry points for qeval_sqnr.yaml; the implementation lives in qeval_plugins.sqnr_task."""

from qeval_plugins.sqnr_task import SqnrTask, load_texts

__all__ = ["SqnrTask", "load_texts"]
