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

from lm_eval.api.instance import Instance

from qeval_plugins.core.errors import QevalError
from qeval_plugins.evals.base import QevalTask
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


def _first(values: list[Any]) -> Any:
    """A model-level figure: every document carries the same value."""
    return values[0] if values else None


AGGREGATIONS = dict.fromkeys(METRICS, _first)
HIGHER_IS_BETTER = directions(METRICS)  # from the one table of metric directions: None here


class OutliersTask(QevalTask):
    """``qeval_outliers``: one request per text, answered by the qeval backend."""

    REQUEST_TYPE = REQUEST_TYPE

    def prepare(self) -> None:
        self.settings = OutlierSettings.from_mapping(dict(self.config.metadata or {}))

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        settings = dict(self.settings.__dict__)
        return Instance(
            request_type=REQUEST_TYPE, doc=doc, arguments=(doc["text"], settings), idx=0, **kwargs
        )

    def process_results(self, doc: dict, results: list[dict[str, Any]]) -> dict[str, Any]:
        [result] = results
        return {name: result["model"][name] for name in METRICS}

    def aggregation(self) -> dict:
        return dict(AGGREGATIONS)

    def higher_is_better(self) -> dict:
        return dict(HIGHER_IS_BETTER)
