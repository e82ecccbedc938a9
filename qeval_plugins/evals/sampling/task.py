"""lm-eval task classes of the sampling-sensitivity tasks (``qeval_temperature`` & co.).

:class:`SamplingTask` is one point of a sweep (e.g. temperature 0.5): every prompt is sampled
``repeats`` times by the quantized model and, with the same seeds, by the unquantized reference.
Per prompt (then averaged over prompts):

* ``rougeL`` (0–1), ``chrf`` (0–100): quality of each sample against the prompt's reference
  continuation, mean over samples; ``reference_rougeL``: the same for the unquantized model;
* ``distinct_1``, ``distinct_2`` (0–1), ``self_bleu`` (0–100): diversity across the samples;
* ``agree_tokens`` (0–1): token-level agreement of each sample with the reference model's sample
  of the same seed; ``agree_rougeL`` (0–1): ROUGE-L between the two;
* ``fluency`` (nats per token, only with metadata ``fluency: true``): the mean log-probability of
  each generated continuation under the unquantized model. It costs a second pass: the reference
  model is loaded again, scores every generation, and the quantized model is reloaded.

:class:`SensitivitySummaryTask` covers the whole sweep (its requests are the same as the sweep's
tasks', so a run of the group generates nothing twice) and reduces it to single numbers:
``rougeL_slope`` (least-squares slope of mean ROUGE-L over the swept value), ``rougeL_spread``
(max − min of the means) and ``rougeL_gap`` (mean of reference − quantized ROUGE-L over the
values in ``[gap_low, gap_high]``: for temperature the 0.5–0.8 band where Roy found 4-bit models
most sensitive; positive means the quantized model is worse).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import datasets
from lm_eval.api.instance import Instance

from qeval_plugins.core.errors import QevalError
from qeval_plugins.evals.base import QevalTask
from qeval_plugins.evals.sampling.engine import REQUEST_TYPE, GenerationSettings
from qeval_plugins.metrics import text as metrics
from qeval_plugins.metrics.directions import directions


def load_prompts(
    prompt_file: str | None = None,
    prompt_field: str = "prompt",
    reference_field: str = "reference",
    **_: Any,
):
    """Prompts and reference continuations: qeval's bundled set, or the user's JSON Lines file.

    ``--metadata '{"prompt_file": PATH, "prompt_field": "question", "reference_field": "answer"}'``
    maps the user's fields onto ``prompt`` and ``reference``.
    """
    from qeval_plugins.paths import tasks_path

    path = (
        Path(prompt_file).expanduser()
        if prompt_file
        else (tasks_path() / "qeval_sampling" / "prompts.jsonl")
    )
    if not path.is_file():
        raise QevalError(f"prompt_file '{path}' does not exist; give a JSON Lines file.")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        docs = [
            {"prompt": str(r[prompt_field]), "reference": str(r[reference_field])} for r in rows
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise QevalError(
            f"prompt_file '{path}': every line must be a JSON object with '{prompt_field}' and "
            f"'{reference_field}' fields ({type(error).__name__}: {error})."
        ) from error
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class SamplingTask(QevalTask):
    """One setting of a sweep; the setting comes from the YAML's ``metadata``."""

    REQUEST_TYPE = REQUEST_TYPE
    fluency = False  # metadata "fluency: true" turns on the second (reference) pass

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        # Settings come from metadata; prepare() writes them to generation_kwargs so that lm-eval
        # logs them (instead of its greedy default) in its messages and the results' task config.
        super().__init__(config={**(config or {}), "generation_kwargs": {"until": []}}, **kwargs)
        with contextlib.suppress(QevalError):  # bad settings fail in one line at request time
            self.prepare()

    def prepare(self) -> None:
        meta = dict(self.config.metadata or {})
        self.settings = GenerationSettings.from_mapping(meta)
        self.fluency = str(meta.get("fluency", False)).lower() in ("true", "1")
        self.config.generation_kwargs = {"until": [], **self.settings.record()}

    def request(self, doc: dict, settings: GenerationSettings, idx: int, kwargs: dict) -> Instance:
        return Instance(
            request_type=REQUEST_TYPE,
            doc=doc,
            arguments=(doc["prompt"], settings.record(), {"fluency": self.fluency}),
            idx=idx,
            **kwargs,
        )

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return self.request(doc, self.settings, 0, kwargs)

    def apply_filters(self) -> None:
        """Keep every sample (lm-eval's default filter would keep only the first repeat)."""
        for instance in self._instances:
            instance.filtered_resps["none"] = list(instance.resps)

    def process_results(self, doc: dict, results: list) -> dict[str, float]:
        [samples] = results
        values = sample_metrics(samples, doc["reference"])
        if self.fluency:
            scored = [s["fluency"] for s in samples if s.get("fluency") is not None]
            values["fluency"] = _mean(scored)
        return values

    def aggregation(self) -> dict:
        return {name: _mean for name in [*METRICS, *(["fluency"] if self.fluency else [])]}

    def higher_is_better(self) -> dict:
        return directions([*METRICS, *(["fluency"] if self.fluency else [])])


# metric -> higher is better, from the one table of metric directions
METRICS = directions(
    (
        "rougeL",
        "chrf",
        "reference_rougeL",
        "distinct_1",
        "distinct_2",
        "self_bleu",
        "agree_tokens",
        "agree_rougeL",
    )
)


def sample_metrics(samples: list[dict], reference: str) -> dict[str, float]:
    """The per-prompt metrics of one setting (see the module docstring)."""
    texts = [s["text"] for s in samples]
    return {
        "rougeL": _mean([metrics.rouge_l(t, reference) for t in texts]),
        "chrf": _mean([metrics.chrf(t, reference) for t in texts]),
        "reference_rougeL": _mean(
            [metrics.rouge_l(s["reference_text"], reference) for s in samples]
        ),
        "distinct_1": metrics.distinct_n(texts, 1),
        "distinct_2": metrics.distinct_n(texts, 2),
        "self_bleu": metrics.self_bleu(texts),
        "agree_tokens": _mean(
            [metrics.token_agreement(s["tokens"], s["reference_tokens"]) for s in samples]
        ),
        "agree_rougeL": _mean([metrics.rouge_l(s["text"], s["reference_text"]) for s in samples]),
    }


class SensitivitySummaryTask(SamplingTask):
    """A whole sweep reduced to slope, spread and gap (metadata: ``sweep``, ``values``)."""

    def prepare(self) -> None:
        meta = dict(self.config.metadata or {})
        self.sweep = meta.get("sweep")
        if self.sweep not in ("temperature", "top_k", "max_new_tokens"):
            raise QevalError(
                f"summary task needs metadata sweep: temperature|top_k|"
                f"max_new_tokens, got {self.sweep!r}."
            )
        self.values = [float(v) for v in meta.get("values", [])]
        # The settings' places on the swept axis, for the slope: top_k 0 (no top-k filtering) is
        # +inf, beyond every finite k, so the slope is over the finite top_k settings only.
        self.positions = [
            math.inf if self.sweep == "top_k" and value == 0 else value for value in self.values
        ]
        self.gap_band = (
            float(meta.get("gap_low", min(self.values, default=0))),
            float(meta.get("gap_high", max(self.values, default=0))),
        )
        self.points = [
            GenerationSettings.from_mapping({**meta, self.sweep: value}) for value in self.values
        ]
        self.config.generation_kwargs = {
            "until": [],
            "sweep": self.sweep,
            "settings": [point.record() for point in self.points],
        }

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> list[Instance]:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return [self.request(doc, point, i, kwargs) for i, point in enumerate(self.points)]

    def process_results(self, doc: dict, results: list) -> dict[str, Any]:
        per_value = []
        for samples in results:
            texts = [s["text"] for s in samples]
            quantized = _mean([metrics.rouge_l(t, doc["reference"]) for t in texts])
            reference = _mean(
                [metrics.rouge_l(s["reference_text"], doc["reference"]) for s in samples]
            )
            per_value.append((quantized, reference))
        return {name: per_value for name in SUMMARY}

    def aggregation(self) -> dict:
        return {name: getattr(self, f"_{name}") for name in SUMMARY}

    def higher_is_better(self) -> dict:
        return dict(SUMMARY)

    def _means(self, docs: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
        quantized = [_mean([doc[i][0] for doc in docs]) for i in range(len(self.values))]
        reference = [_mean([doc[i][1] for doc in docs]) for i in range(len(self.values))]
        return quantized, reference

    def _rougeL_slope(self, docs):
        return metrics.slope(self.positions, self._means(docs)[0])

    def _rougeL_spread(self, docs):
        return metrics.spread(self._means(docs)[0])

    def _rougeL_gap(self, docs):
        quantized, reference = self._means(docs)
        return metrics.band_gap(self.values, quantized, reference, *self.gap_band)


SUMMARY = directions(("rougeL_slope", "rougeL_spread", "rougeL_gap"))
