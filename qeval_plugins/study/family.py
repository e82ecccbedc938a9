"""The model family the study trains: sizes, training recipes, seeds, and where each lands.

A family member is a ``LlamaForCausalLM`` of one :class:`Size`, trained with one :class:`Recipe`
from one seed, named ``f"{recipe}-{size}-seed{seed}"`` (``base-m-seed2``). Every size uses the
embedded ``qeval-tiny`` tokenizer (vocabulary :data:`VOCAB_SIZE` = 2048), untied input and output
embeddings, 4 attention heads and 2 key/value heads (head dimension ``hidden / 4`` >= 8).
The sizes span 32x in non-embedding parameters (:attr:`Size.non_embedding_params`).

:func:`default_family` is the base recipe at every size and the five other recipes at one
size, each from seeds 1 and 2. Checkpoints are saved at :data:`CHECKPOINT_FRACTIONS` of the
training steps, as Hugging Face model folders ``family_root()/<member>/<pct>pct``
(:func:`checkpoint_dir`); :mod:`.training` writes them. :func:`held_out_passages` writes
in-domain passages that no member trains on. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.storage.cache_layout import cache_root
from qeval_plugins.study.world_corpus import CorpusGenerator, build_world

#: tokenizer vocabulary of the embedded qeval-tiny, shared by every member
VOCAB_SIZE = 2048
#: fractions of the training steps at which a checkpoint is saved
CHECKPOINT_FRACTIONS = (0.25, 0.5, 1.0)
#: seed of the generator of :func:`held_out_passages` (no training corpus uses it)
HELD_OUT_SEED = 990_001
HELD_OUT_COUNT = 40
HELD_OUT_PIECES = 4
HELD_OUT_WORDS = (60, 200)
#: document kinds whose text has no newline (``arithmetic`` has; see :func:`held_out_passages`)
HELD_OUT_KINDS = tuple(k for k, _ in CorpusGenerator.KINDS if k != "arithmetic")


@dataclass(frozen=True)
class Size:
    """A Llama shape: ``hidden`` width, ``layers`` decoder layers, ``intermediate`` MLP width."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int = 4
    kv_heads: int = 2

    @property
    def head_dim(self) -> int:
        """``hidden / heads``."""
        return self.hidden // self.heads

    @property
    def non_embedding_params(self) -> int:
        """Parameters outside the input embedding and the (untied) output head.

        Per layer: q and o projections ``2 h²``, k and v ``2 h · kv_heads · head_dim``, the
        gated MLP ``3 h · intermediate``, two RMSNorm weights ``2 h``; plus the final norm ``h``.
        No biases (Llama).
        """
        h = self.hidden
        attention = 2 * h * h + 2 * h * self.kv_heads * self.head_dim
        per_layer = attention + 3 * h * self.intermediate + 2 * h
        return self.layers * per_layer + h


@dataclass(frozen=True)
class Recipe:
    """How a member is trained.

    ``weight_decay``: AdamW decoupled weight decay on matrices (norm weights never decay).
    ``dropout``: probability of the Llama attention-weight dropout (``attention_dropout``) and of
    a dropout on each MLP's output before the residual add (LlamaConfig has no residual dropout;
    the trainer adds it with a forward hook, so the saved model is a plain Llama).
    ``grad_clip``: maximum global gradient L2 norm, or None for no clipping.
    ``precision``: ``"float32"``; ``"bfloat16"`` (mixed precision, float32 master weights);
    ``"float16"`` (mixed precision with a dynamic loss scale, ``torch.amp.GradScaler``). On an
    accelerator that is ``torch.autocast``; on CPU, where low-precision matmuls are too slow,
    the linear layers round to the format instead (:func:`.training.emulate_low_precision`).
    Checkpoints are float32 whatever the precision.
    """

    name: str
    weight_decay: float = 0.0
    dropout: float = 0.0
    grad_clip: float | None = None
    precision: str = "float32"


SIZES: dict[str, Size] = {
    "xs": Size("xs", hidden=32, layers=2, intermediate=96),
    "s": Size("s", hidden=64, layers=2, intermediate=192),
    "m": Size("m", hidden=96, layers=3, intermediate=288),
    "l": Size("l", hidden=128, layers=4, intermediate=384),
}

RECIPES: dict[str, Recipe] = {
    "base": Recipe("base"),
    "wd0.1": Recipe("wd0.1", weight_decay=0.1),
    "dropout0.1": Recipe("dropout0.1", dropout=0.1),
    "clip1.0": Recipe("clip1.0", grad_clip=1.0),
    "bf16": Recipe("bf16", precision="bfloat16"),
    "fp16": Recipe("fp16", precision="float16"),
}


@dataclass(frozen=True)
class Member:
    """One trained model of the family: a size, a recipe and a seed."""

    size: Size
    recipe: Recipe
    seed: int

    @property
    def name(self) -> str:
        """``f"{recipe}-{size}-seed{seed}"``, e.g. ``base-xs-seed1``."""
        return f"{self.recipe.name}-{self.size.name}-seed{self.seed}"


def default_family(
    sizes: tuple[str, ...] = ("xs", "s", "m", "l"),
    seeds: tuple[int, ...] = (1, 2),
    variant_size: str = "s",
) -> list[Member]:
    """The base recipe at every size, and every other recipe at ``variant_size``, per seed."""
    members = [Member(SIZES[s], RECIPES["base"], seed) for s in sizes for seed in seeds]
    for recipe in RECIPES.values():
        if recipe.name != "base":
            members.extend(Member(SIZES[variant_size], recipe, seed) for seed in seeds)
    return members


def family_root(root: Path | None = None) -> Path:
    """``root``, else ``cache_root()/"family"``."""
    return Path(root) if root is not None else cache_root() / "family"


def checkpoint_dir(member: Member, fraction: float, root: Path | None = None) -> Path:
    """``member``'s model folder after ``fraction`` of its steps: ``<root>/<name>/<pct>pct``."""
    return family_root(root) / member.name / f"{round(fraction * 100)}pct"


def held_out_passages(root: Path | None = None) -> Path:
    """A JSONL file of 40 in-domain passages (``{"text": ...}``) that no member trains on.

    Created once (atomically) at ``family_root(root)/held_out_passages.jsonl``. Each passage is
    :data:`HELD_OUT_PIECES` pieces of the world's grammar (a generator seeded with
    :data:`HELD_OUT_SEED`) joined by newlines, 60 to 200 words. It is never a training document:
    a document joins one to three pieces by newlines, and only the ``arithmetic`` piece has
    newlines of its own, which a passage never uses; so a passage has three newlines and no
    arithmetic, and a document with three newlines has arithmetic.
    """
    path = family_root(root) / "held_out_passages.jsonl"
    if path.exists():
        return path
    gen = CorpusGenerator(build_world(), random.Random(HELD_OUT_SEED))
    lines: list[str] = []
    while len(lines) < HELD_OUT_COUNT:
        kinds = gen.rng.sample(HELD_OUT_KINDS, HELD_OUT_PIECES)
        text = "\n".join(getattr(gen, kind)() for kind in kinds)
        if HELD_OUT_WORDS[0] <= len(text.split()) <= HELD_OUT_WORDS[1]:
            lines.append(json.dumps({"text": text}, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path
