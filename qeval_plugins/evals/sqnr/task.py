"""The lm-eval task class of ``qeval_sqnr`` and the aggregation of its metrics.

Each document is one text; its request (type ``qeval_sqnr``) is answered by the ``qeval``
backend (``backend.lm.QevalLM.qeval_sqnr``), which returns per-text sums.

**In lm-eval's results (its printed table)** — the headline metrics only
(:data:`~qeval_plugins.evals.sqnr.engine.TABLE_METRICS`):

* ``weight_sqnr_mean_db`` — weight SQNR, the mean in dB over the layers that changed;
* ``logit_sqnr_db`` — 10·log10(Σx²/Σ(x−x̂)²) over the reference's full logits x and the quantized
  logits x̂ at the first ``logit_positions`` token positions (dB; ``"inf"`` when identical,
  ``"-inf"`` when the reference is all zeros and the quantized model's is not);
* ``kl_mean``, ``kl_median``, ``kl_p99`` — KL(P_ref‖P_quant) per token in nats: mean, median and
  99th percentile. With ``kl=exact`` over every token, from the reference's full
  log-probabilities cached in 2 bytes per entry, within ``kl_error_bound``; with ``kl=topk`` over
  the reference's top-k tokens plus one lumped tail category (a lower bound of the exact KL, equal
  to it when the reference's tail mass is zero: 0.47-0.65x the exact KL on a text-trained model);
  ``kl=auto`` (default) is exact when its cache fits ``kl_cache_budget``, else top-k with one
  warning;
* ``kl_error_bound`` — the KL's lower-bound mark: exact mode, a bound on the error of
  ``kl_mean``; top-k mode, ``"inf"`` (every KL figure a lower bound);
* ``top1_agreement`` — fraction of tokens whose argmax agrees;
* ``ppl_ratio`` — PPL_quant / PPL_ref, token perplexities exp(mean NLL) over all texts.

**In the qeval block** (``config.qeval.sqnr.metrics`` of the results JSON, where ``qeval report``
reads them as metrics of this task) — every other metric
(:data:`~qeval_plugins.evals.sqnr.engine.BLOCK_METRICS`):

* ``ppl_reference``, ``ppl_quantized``, ``ppl_delta`` — token perplexity of both models on the
  texts, and quantized minus reference;
* ``weight_sqnr_min_db``, ``weight_sqnr_global_db`` — weight SQNR of the worst layer and over all
  weights together;
* ``activation_sqnr_last_db``, ``activation_sqnr_min_db`` — SQNR of the hidden state after the last
  decoder block and after the worst block;
* the statistics of llama.cpp's ``llama-perplexity --kl-divergence`` and more, over every scored
  token of every text (:mod:`qeval_plugins.metrics.divergence_stats` defines each): KL
  ``kl_mean_err``, ``kl_max``, ``kl_p999``, ``kl_p95``, ``kl_p90``, ``kl_p10``, ``kl_p5``,
  ``kl_p1``, ``kl_p01``, ``kl_min``; ``kl_reverse_mean`` (KL(P_quant‖P_ref)),
  ``kl_symmetric_mean`` (their sum), each ``_err``; ``kl_mean_pos_early`` / ``kl_mean_pos_late``
  (tokens at position < / >= 32 of their text); Δp = p_quant(correct) − p_ref(correct):
  ``dp_mean(_err)``, ``dp_max`` … ``dp_min`` (with ``dp_p75``, ``dp_p25``), ``rms_dp(_err)``;
  ``top1_agreement_err``; ``ppl_quantized_err``, ``ppl_reference_err``, ``ppl_ratio_err``,
  ``ln_ppl_ratio(_err)``, ``ln_ppl_corr``. Δp, perplexity and agreement statistics are exact in
  both modes (they need only p_ref of the correct token).

The ``_err`` metrics are standard errors (lm-eval's own ``_stderr`` of these metrics is "N/A":
they are not means over documents). Run-level values reach lm-eval as ``{"run": value}`` per
document (:func:`~qeval_plugins.evals.base.run_level`). Per-layer and per-block values, the names
of the worst layers, the cache key, the KL mode with its bound (``kl_mode``, ``kl_is_lower_bound``,
and ``kl_fallback``: why ``kl=auto`` used top-k) and the tokens where the models disagree most are
in the same ``config.qeval.sqnr`` block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

from qeval_plugins.core.errors import QevalError
from qeval_plugins.evals.base import TextTask, first_run_level, run_level
from qeval_plugins.evals.sqnr.engine import (
    REQUEST_TYPE,
    RUN_METRICS,
    TABLE_METRICS,
    SqnrSettings,
)
from qeval_plugins.metrics.directions import directions


def load_texts(text_file: str | None = None, text_field: str = "text", **_: Any):
    """The task's documents: qeval's bundled passages, or the user's file.

    ``text_file`` (lm-eval ``--metadata '{"text_file": PATH}'``) may be JSON Lines (one object per
    line, the text under ``text_field``) or plain text (passages separated by blank lines).
    """
    path = Path(text_file).expanduser() if text_file else _bundled_passages()
    if not path.is_file():
        raise QevalError(
            f"qeval_sqnr text_file '{path}' does not exist; give a .jsonl or .txt file."
        )
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        try:
            rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
            texts = [str(row[text_field]) for row in rows]
        except (ValueError, KeyError, TypeError) as error:
            raise QevalError(
                f"qeval_sqnr text_file '{path}': every line must be a JSON object with a "
                f"'{text_field}' field ({type(error).__name__}: {error})."
            ) from error
    else:
        texts = [block.strip() for block in raw.split("\n\n") if block.strip()]
    if not texts:
        raise QevalError(f"qeval_sqnr text_file '{path}' holds no text.")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"text": t} for t in texts])})


def _bundled_passages() -> Path:
    from qeval_plugins.paths import tasks_path

    return tasks_path() / "qeval_sqnr" / "passages.jsonl"


# ---------------------------------------------------------------- aggregations (lists -> numbers)


def _sqnr(pairs: list[tuple[float, float]]) -> float | str:
    from qeval_plugins.evals.sqnr.engine import sqnr_value

    return sqnr_value(sum(p[0] for p in pairs), sum(p[1] for p in pairs))


def _mean_of_lists(lists: list[list[float]]) -> float:
    values = [v for values in lists for v in values]
    return sum(values) / len(values) if values else 0.0


def _p99_of_lists(lists: list[list[float]]) -> float:
    from qeval_plugins.metrics.divergence import percentile

    values = [v for values in lists for v in values]
    return percentile(values, 99.0) if values else 0.0


def _ratio(pairs: list[tuple[float, float]]) -> float:
    total = sum(p[1] for p in pairs)
    return sum(p[0] for p in pairs) / total if total else 0.0


# the table metrics (engine.TABLE_METRICS): aggregated over documents, or run-level values
# computed by the engine over all texts, which every document carries
AGGREGATIONS = {
    "logit_sqnr_db": _sqnr,
    "kl_mean": _mean_of_lists,
    "kl_p99": _p99_of_lists,
    "top1_agreement": _ratio,
    **{name: first_run_level for name in TABLE_METRICS if name in RUN_METRICS},
}
HIGHER_IS_BETTER = directions(AGGREGATIONS)  # from the one table of metric directions


class SqnrTask(TextTask):
    """``qeval_sqnr``: one ``qeval_sqnr`` request per text, answered by the qeval backend."""

    REQUEST_TYPE = REQUEST_TYPE
    SETTINGS = SqnrSettings
    AGGREGATIONS = AGGREGATIONS
    HIGHER_IS_BETTER = HIGHER_IS_BETTER

    def process_results(self, doc: dict, results: list[dict[str, Any]]) -> dict[str, Any]:
        [result] = results
        return {
            "logit_sqnr_db": result["logit_energy"],
            "kl_mean": result["kl"],
            "kl_p99": result["kl"],
            "top1_agreement": (result["top1_agree"], result["tokens"]),
            **{name: run_level(value) for name, value in result["model"].items()},
        }
