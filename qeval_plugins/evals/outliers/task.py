"""The lm-eval task class of ``qeval_outliers`` and its metrics.

Each document is one text; its request (type ``qeval_outliers``) is answered by the ``qeval``
backend through :func:`qeval_plugins.evals.outliers.engine.run`, which measures every text on the
unquantized reference and on the quantized model (definitions in that module). The metrics are
model-level figures over all the texts, the same for every document:

* ``outlier_features_quantized``, ``outlier_features_reference`` — how many hidden dimensions are
  outlier features (LLM.int8() criteria) of the quantized model and of the reference;
* ``outliers_created``, ``outliers_destroyed`` — outlier features of the quantized model that the
  reference lacks, and of the reference that the quantized model lacks;
* ``act_absmax_quantized``, ``act_absmax_reference`` — largest |x| of the projection inputs over
  all decoder layers;
* ``act_kurtosis_quantized``, ``act_kurtosis_reference`` — mean over the decoder layers of the
  excess kurtosis of each layer's projection inputs;
* ``weight_kurtosis_quantized``, ``weight_kurtosis_reference`` — mean over the decoder layers of
  the mean excess kurtosis of each layer's linear weights.

They describe the model and have no better direction (``metrics.directions``: none). Per-layer
lists and the outlier dimensions go into the results JSON's ``config.qeval.outliers`` block.
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.evals.base import TextTask, first_run_level, run_level
from qeval_plugins.evals.outliers.engine import REQUEST_TYPE, OutlierSettings
from qeval_plugins.evals.sqnr import task as sqnr_task
from qeval_plugins.metrics.directions import directions

METRICS = (
    "outlier_features_quantized",
    "outlier_features_reference",
    "outliers_created",
    "outliers_destroyed",
    "act_absmax_quantized",
    "act_absmax_reference",
    "act_kurtosis_quantized",
    "act_kurtosis_reference",
    "weight_kurtosis_quantized",
    "weight_kurtosis_reference",
)


def load_texts(**settings: Any):
    """The documents: the bundled ``qeval_sqnr`` passages, or the user's ``text_file`` (see
    :func:`qeval_plugins.evals.sqnr.task.load_texts`: same settings, same formats)."""
    try:
        return sqnr_task.load_texts(**settings)
    except QevalError as error:  # its messages name qeval_sqnr
        raise QevalError(str(error).replace("qeval_sqnr", REQUEST_TYPE, 1)) from None


AGGREGATIONS = dict.fromkeys(METRICS, first_run_level)
HIGHER_IS_BETTER = directions(METRICS)  # from the one table of metric directions: None here


class OutliersTask(TextTask):
    """``qeval_outliers``: one request per text, answered by the qeval backend. Each document
    carries the model-level figures wrapped (:func:`~qeval_plugins.evals.base.run_level`), so
    the paired test of ``qeval report`` never reads them as per-document values."""

    REQUEST_TYPE = REQUEST_TYPE
    SETTINGS = OutlierSettings
    AGGREGATIONS = AGGREGATIONS
    HIGHER_IS_BETTER = HIGHER_IS_BETTER

    def process_results(self, doc: dict, results: list[dict[str, Any]]) -> dict[str, Any]:
        [result] = results
        return {name: run_level(result["model"][name]) for name in METRICS}
