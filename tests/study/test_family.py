"""The study's model family: sizes, recipes, names, folders and held-out passages."""

from __future__ import annotations

import json
import random

from qeval_plugins.study import family
from qeval_plugins.study.family import (
    RECIPES,
    SIZES,
    Member,
    checkpoint_dir,
    default_family,
    held_out_passages,
)
from qeval_plugins.study.world_corpus import CorpusGenerator, build_world


def test_sizes_span_16x_in_non_embedding_params_and_match_the_built_models():
    """The formula counts what the Llama model holds outside both embedding matrices."""
    from transformers import LlamaConfig, LlamaForCausalLM

    counts = {}
    for size in SIZES.values():
        config = LlamaConfig(
            vocab_size=family.VOCAB_SIZE,
            hidden_size=size.hidden,
            intermediate_size=size.intermediate,
            num_hidden_layers=size.layers,
            num_attention_heads=size.heads,
            num_key_value_heads=size.kv_heads,
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(config)
        total = sum(p.numel() for p in model.parameters())
        embeddings = 2 * family.VOCAB_SIZE * size.hidden
        assert size.non_embedding_params == total - embeddings
        assert size.head_dim >= 8
        counts[size.name] = size.non_embedding_params
    assert counts == {"xs": 24_736, "s": 98_624, "m": 332_448, "l": 787_584}
    assert counts["l"] / counts["xs"] >= 16


def test_default_family_names_and_checkpoint_folders(tmp_path):
    members = default_family()
    names = [m.name for m in members]
    assert len(names) == 18 == len(set(names))
    assert names[:2] == ["base-xs-seed1", "base-xs-seed2"]
    assert {n for n in names if n.startswith("base-")} == {
        f"base-{s}-seed{seed}" for s in ("xs", "s", "m", "l") for seed in (1, 2)
    }
    assert {"wd0.1-s-seed1", "dropout0.1-s-seed2", "clip1.0-s-seed1", "bf16-s-seed2"} <= set(names)
    assert "fp16-s-seed1" in names and "fp16-xs-seed1" not in names
    assert set(RECIPES) == {"base", "wd0.1", "dropout0.1", "clip1.0", "bf16", "fp16"}
    member = Member(SIZES["m"], RECIPES["clip1.0"], 2)
    assert checkpoint_dir(member, 0.25, tmp_path) == tmp_path / "clip1.0-m-seed2" / "25pct"
    assert checkpoint_dir(member, 1.0, tmp_path) == tmp_path / "clip1.0-m-seed2" / "100pct"
    assert family.family_root() == family.cache_root() / "family"


def test_held_out_passages_are_in_domain_and_never_training_documents(tmp_path, monkeypatch):
    from qeval_plugins.study import training

    path = held_out_passages(tmp_path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and len({r["text"] for r in rows}) == 40
    assert all(60 <= len(r["text"].split()) <= 200 for r in rows)
    assert all(r["text"].count("\n") == 3 and " plus " not in r["text"] for r in rows)
    world = build_world()
    docs = set(
        CorpusGenerator(world, random.Random(training.CORPUS_SEED_OFFSET + 1)).documents(
            training.CORPUS_DOCS
        )
    )
    assert not docs & {r["text"] for r in rows}
    assert any(d.count("\n") == 3 for d in docs)  # the structural argument is not vacuous
    first = path.read_bytes()
    monkeypatch.setattr(family, "HELD_OUT_SEED", 1)  # a second call reuses the file
    assert held_out_passages(tmp_path).read_bytes() == first
