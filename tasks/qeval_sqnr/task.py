"""Entry points for qeval_sqnr.yaml; the implementation lives in qeval_plugins.evals.sqnr.task."""

from qeval_plugins.evals.sqnr.task import SqnrTask, load_texts

__all__ = ["SqnrTask", "load_texts"]
