"""Dataset loaders for the ``qeval_demo`` lm-eval task family.

The demo data are small JSON Lines files that sit next to this module. They are
generated, from the same fictional world that the embedded ``qeval-tiny`` model
was trained on, by ``scripts/train_qeval_tiny.py`` (``--write-tasks``). Each
YAML in this folder points at one loader through ``custom_dataset: !function``;
lm-eval calls it as ``fn(**metadata, **dataset_kwargs)``, so every loader
accepts and ignores arbitrary keyword arguments. Paths are resolved from this
file, so the tasks load offline and from any working directory (including an
installed copy of the package).

``load_sampling`` feeds the ``qeval_demo_temperature`` tasks (qeval_sampling's task classes):
it hands ``sampling.jsonl`` to qeval_sampling's own loader, which validates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

DATA_DIR = Path(__file__).resolve().parent


def read_jsonl(name: str) -> list[dict[str, Any]]:
    """Rows of the JSON Lines file ``name`` in this folder."""
    with (DATA_DIR / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _as_test_split(name: str) -> datasets.DatasetDict:
    """``name`` as a ``DatasetDict`` with one ``test`` split."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_jsonl(name))})


def load_facts(**kwargs: Any) -> datasets.DatasetDict:
    """Multiple-choice fact questions: ``id``, ``kind``, ``context``, ``choices`` (4), ``label``."""
    return _as_test_split("facts.jsonl")


def load_cloze(**kwargs: Any) -> datasets.DatasetDict:
    """Held-out cloze prompts for greedy completion: ``id``, ``kind``, ``context``, ``target``."""
    return _as_test_split("cloze.jsonl")


def load_ppl(**kwargs: Any) -> datasets.DatasetDict:
    """Held-out passages for rolling perplexity: ``id``, ``text``."""
    return _as_test_split("ppl.jsonl")


def load_sampling(prompt_file: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
    """Held-out story openings (``prompt``) and the world's continuations (``reference``) of
    ``sampling.jsonl``, through :func:`qeval_plugins.evals.sampling.task.load_prompts`; a user's
    ``--metadata '{"prompt_file": PATH}'`` replaces them there as in qeval_sampling."""
    from qeval_plugins.evals.sampling.task import load_prompts

    return load_prompts(prompt_file=prompt_file or str(DATA_DIR / "sampling.jsonl"), **kwargs)


def load_divergence_texts(text_file: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
    """The held-out passages of ``ppl.jsonl`` as ``qeval_sqnr``'s texts, through
    :func:`qeval_plugins.evals.sqnr.task.load_texts`; a user's ``--metadata
    '{"text_file": PATH}'`` replaces them there as in qeval_sqnr."""
    from qeval_plugins.evals.sqnr.task import load_texts

    return load_texts(text_file=text_file or str(DATA_DIR / "ppl.jsonl"), **kwargs)
