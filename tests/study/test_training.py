"""The family trainer: deterministic, resumable, every recipe trains, checkpoints load."""

from __future__ import annotations

import json
import math

import pytest

from qeval_plugins.core.errors import QevalError
from qeval_plugins.study import training
from qeval_plugins.study.family import RECIPES, SIZES, Member, Recipe

XS = SIZES["xs"]


@pytest.fixture(autouse=True)
def small_corpus(monkeypatch):
    """A few hundred documents and short evaluations keep each run to a second or two."""
    monkeypatch.setattr(training, "CORPUS_DOCS", 300)
    monkeypatch.setattr(training, "HELD_OUT_DOCS", 40)
    monkeypatch.setattr(training, "EVAL_WINDOWS", 2)


def weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_weights_and_another_seed_differs(tmp_path):
    base = RECIPES["base"]
    runs = {
        name: training.train_family([member], root=tmp_path / name, steps=5, progress=lambda _: 0)
        for name, member in [
            ("a", Member(XS, base, 1)),
            ("b", Member(XS, base, 1)),
            ("c", Member(XS, base, 2)),
        ]
    }
    a = weights(runs["a"]["base-xs-seed1"][1.0])
    assert same(a, weights(runs["b"]["base-xs-seed1"][1.0]))
    assert not same(a, weights(runs["c"]["base-xs-seed2"][1.0]))


def test_an_interrupted_member_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Dropout and float16 (loss scale) make every piece of resume state matter."""
    members = [Member(XS, RECIPES["dropout0.1"], 1), Member(XS, RECIPES["fp16"], 1)]
    whole = training.train_family(members, root=tmp_path / "whole", steps=8, progress=print)

    real_save = training.save_checkpoint

    class Interrupted(Exception):
        pass

    def save_then_stop(model, member, fraction, *args):
        real_save(model, member, fraction, *args)
        if fraction == 0.25:
            raise Interrupted

    root = tmp_path / "cut"
    for member in members:
        monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
        with pytest.raises(Interrupted):
            training.train_family([member], root=root, steps=8, progress=print)
        assert (root / member.name / "25pct.state.pt").exists()
        assert not (root / member.name / "50pct").exists()
        monkeypatch.setattr(training, "save_checkpoint", real_save)
        lines: list[str] = []
        resumed = training.train_family([member], root=root, steps=8, progress=lines.append)
        assert any("resuming from 25pct (step 2)" in line for line in lines)
        for fraction in (0.5, 1.0):
            assert same(
                weights(resumed[member.name][fraction]), weights(whole[member.name][fraction])
            )
        assert not list((root / member.name).glob("*.state.pt"))


def test_every_recipe_trains_with_finite_loss_and_the_checkpoint_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    members = [Member(XS, recipe, 1) for recipe in RECIPES.values()]
    out = training.train_family(members, root=tmp_path, steps=4, progress=lambda _: 0)
    finals = {}
    for member in members:
        folder = out[member.name][1.0]
        block = json.loads((folder / "config.json").read_text(encoding="utf-8"))["qeval_family"]
        assert block["recipe"] == member.recipe.name and block["size"] == "xs"
        assert block["seed"] == 1 and block["fraction"] == 1.0 and block["steps"] == 4
        assert block["non_embedding_params"] == XS.non_embedding_params
        assert math.isfinite(block["train_loss"]) and math.isfinite(block["held_out_loss"])
        assert block["train_loss"] < math.log(2048)
        finals[member.recipe.name] = weights(folder)
    # each recipe changes the training (float16/bfloat16 rounding, decay, dropout); a norm of 1.0
    # does not clip these first steps, a tiny one does
    for name in ("wd0.1", "dropout0.1", "bf16", "fp16"):
        assert not same(finals[name], finals["base"]), name
    assert same(finals["clip1.0"], finals["base"])
    tight = Member(XS, Recipe("clip1e-3", grad_clip=1e-3), 1)
    clipped = training.train_family([tight], root=tmp_path, steps=4, progress=lambda _: 0)
    assert not same(weights(clipped[tight.name][1.0]), finals["base"])
    folder = out["fp16-xs-seed1"][1.0]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.qeval_family["recipe"] == "fp16"
    assert next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.float32"
    assert tokenizer("The capital of Varnia is")["input_ids"]
    lines: list[str] = []
    again = training.train_family(members[:1], root=tmp_path, steps=4, progress=lines.append)
    assert again["base-xs-seed1"][0.25] == tmp_path / "base-xs-seed1" / "25pct"
    assert lines == [f"base-xs-seed1: already trained ({out['base-xs-seed1'][1.0]})"]
    with pytest.raises(QevalError, match="trained for 4 steps, not 6: give --steps 4"):
        training.train_family(members[:1], root=tmp_path, steps=6, progress=lines.append)
