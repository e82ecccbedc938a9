"""Entry points for qeval_outliers.yaml; the implementation: qeval_plugins.evals.outliers."""

from qeval_plugins.evals.outliers.task import OutliersTask, load_texts

__all__ = ["OutliersTask", "load_texts"]
