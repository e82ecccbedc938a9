"""Tests of the embedded default model ``qeval-tiny`` and the ``qeval_demo`` task data.

The model lives in ``qeval_plugins/embedded/qeval-tiny`` and the demo data in
``tasks/qeval_demo``; both are produced by ``scripts/train_qeval_tiny.py``. These
tests check that the model is small, loads offline, has quantization-friendly
shapes, and is actually trained on the world the demo tasks ask about.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "qeval_plugins" / "embedded" / "qeval-tiny"
DEMO_DIR = REPO / "tasks" / "qeval_demo"
MAX_MODEL_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def tokenizer():
    """The embedded tokenizer, loaded without network access."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)


@pytest.fixture(scope="module")
def model():
    """The embedded model in eval mode, loaded without network access."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True, dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def demo_utils() -> ModuleType:
    """``tasks/qeval_demo/utils.py`` imported by path (``tasks`` is not a package)."""
    spec = importlib.util.spec_from_file_location("qeval_demo_utils", DEMO_DIR / "utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_dir_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file()}
    for needed in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert needed in files, f"{needed} missing from {MODEL_DIR}"
    assert sum(files.values()) <= MAX_MODEL_BYTES
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)


def test_tokenizer_loads_offline(tokenizer):
    assert tokenizer.bos_token == "<s>"
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token is not None and tokenizer.unk_token is not None
    assert tokenizer.model_max_length == 512
    assert 2048 <= len(tokenizer) <= 4096
    ids = tokenizer("The capital of Varnia is Olmsted.").input_ids
    assert tokenizer.bos_token_id not in ids  # GPT-2 style: no BOS added implicitly
    assert tokenizer.decode(ids) == "The capital of Varnia is Olmsted."


def test_model_is_quantization_friendly_llama(model, tokenizer):
    from transformers import LlamaForCausalLM

    assert isinstance(model, LlamaForCausalLM)
    cfg = model.config
    assert cfg.hidden_size % 128 == 0
    assert cfg.intermediate_size % 128 == 0
    assert cfg.vocab_size == len(tokenizer)
    assert cfg.bos_token_id == tokenizer.bos_token_id
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert next(model.parameters()).dtype.is_floating_point


def test_model_is_trained(model, tokenizer, demo_utils):
    """Mean per-token loss on held-out demo passages is far below a uniform guess."""
    import torch

    passages = list(demo_utils.load_ppl()["test"]["text"])
    seqs = [[tokenizer.bos_token_id, *ids] for ids in tokenizer(passages).input_ids]
    width = max(len(s) for s in seqs)
    x = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in seqs])
    with torch.no_grad():  # one padded batch; right padding does not affect a causal model
        mean_loss = float(model(input_ids=x, labels=labels).loss)
    uniform = math.log(model.config.vocab_size)
    assert mean_loss < 2.0, f"held-out loss {mean_loss:.3f} (uniform guess: {uniform:.3f})"


def test_model_knows_the_facts(model, tokenizer, demo_utils):
    """Zero-shot multiple choice on the demo facts is far above chance (0.25)."""
    import torch

    docs = demo_utils.load_facts()["test"]
    seqs, spans = [], []
    for doc in docs:
        ctx = tokenizer(doc["context"]).input_ids
        for choice in doc["choices"]:
            full = tokenizer(f"{doc['context']} {choice}").input_ids
            seqs.append(full)
            spans.append(len(ctx))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    x = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
    scores = []
    for row, (s, start) in enumerate(zip(seqs, spans, strict=True)):
        targets = torch.tensor(s[start:])[:, None]
        scores.append(float(logprobs[row, start - 1 : len(s) - 1].gather(1, targets).sum()))
    correct = 0
    for i, doc in enumerate(docs):
        doc_scores = scores[4 * i : 4 * i + 4]
        correct += int(max(range(4), key=doc_scores.__getitem__) == doc["label"])
    assert correct / len(docs) > 0.6


def test_demo_data_loads_with_expected_fields(demo_utils):
    facts = demo_utils.load_facts(version=1.0, anything="ignored")
    assert list(facts) == ["test"]
    facts = facts["test"]
    assert 60 <= len(facts) <= 100
    for doc in facts:
        assert set(doc) >= {"context", "choices", "label"}
        assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4
        assert 0 <= doc["label"] < 4
        assert not doc["context"].endswith(" ")

    cloze = demo_utils.load_cloze()["test"]
    assert 30 <= len(cloze) <= 60
    for doc in cloze:
        assert doc["context"] and doc["target"] and " " not in doc["target"]

    ppl = demo_utils.load_ppl()["test"]
    assert 20 <= len(ppl) <= 40
    assert all(len(doc["text"].split()) >= 40 for doc in ppl)


def test_demo_yaml_files_describe_the_groups():
    import yaml

    class _Loader(yaml.SafeLoader):
        """SafeLoader that keeps lm-eval's ``!function`` tags as plain strings."""

    _Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")
    configs = [yaml.load(p.read_text(), Loader=_Loader) for p in DEMO_DIR.glob("*.yaml")]
    groups = {c["group"]: c["task"] for c in configs if "group" in c}
    tasks = {c["task"]: c for c in configs if "group" not in c}
    assert sorted(groups) == ["qeval_demo", "qeval_demo_divergence", "qeval_demo_temperature"]
    expected = {
        "qeval_demo_facts": "multiple_choice",
        "qeval_demo_cloze": "generate_until",
        "qeval_demo_ppl": "loglikelihood_rolling",
    }
    assert {name: tasks[name]["output_type"] for name in groups["qeval_demo"]} == expected
    for name in groups["qeval_demo"]:
        cfg = tasks[name]
        assert cfg["test_split"] == "test"
        assert "dataset_path" not in cfg  # data comes from utils.py, never from a hub or cwd
        assert cfg["custom_dataset"].startswith("!function utils.load_")
    sweep = [
        "qeval_demo_temperature_0.0",
        "qeval_demo_temperature_0.5",
        "qeval_demo_temperature_1.0",
    ]
    assert groups["qeval_demo_temperature"] == sweep
    assert sorted(tasks) == sorted([*expected, *sweep])
    for name in sweep:  # qeval_sampling's template on the world's prompts
        assert tasks[name]["include"] == "_demo_sampling_template_yaml"
        assert tasks[name]["metadata"]["temperature"] == float(name.rsplit("_", 1)[1])
    template = (DEMO_DIR / "_demo_sampling_template_yaml").read_text()
    assert "include: ../qeval_sampling/_sampling_template_yaml" in template
    assert "custom_dataset: !function utils.load_sampling" in template
    assert groups["qeval_demo_divergence"] == [
        {"task": "qeval_sqnr", "custom_dataset": "!function utils.load_divergence_texts"}
    ]


def test_sampling_prompts_are_reproduced_by_the_script_and_held_out(monkeypatch):
    """``sampling.jsonl`` is what the task writer of scripts/train_qeval_tiny.py gives (which
    asserts that no prompt occurs in the training corpus); no story is a training document."""
    import random

    spec = importlib.util.spec_from_file_location("train", REPO / "scripts" / "train_qeval_tiny.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train", train)  # its dataclasses look themselves up there
    spec.loader.exec_module(train)
    world = train.build_world()
    docs = train.CorpusGenerator(world, random.Random(1234)).documents(40000)
    corpus = "\n".join(docs)
    rows = train.make_sampling_task(world, 1234, corpus, set(docs))
    lines = (DEMO_DIR / "sampling.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert len(rows) == 16 and len({row["prompt"] for row in rows}) == 16
    for row in rows:
        assert row["prompt"] not in corpus
        assert f"{row['prompt']} {row['reference']}" not in docs
        assert 0 < len(row["reference"].split()) <= train.MAX_REFERENCE_WORDS


def test_demo_sampling_and_divergence_loaders(demo_utils, tmp_path):
    """The world's prompts and passages by default; a user's file replaces them."""
    prompts = demo_utils.load_sampling(temperature=0.5)["test"]
    assert len(prompts) == 16 and set(prompts.column_names) == {"prompt", "reference"}
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"q": "Hello", "a": "world"}\n', encoding="utf-8")
    custom = demo_utils.load_sampling(prompt_file=str(mine), prompt_field="q", reference_field="a")
    assert list(custom["test"]) == [{"prompt": "Hello", "reference": "world"}]
    texts = demo_utils.load_divergence_texts(max_tokens=256)["test"]["text"]
    assert texts == list(demo_utils.load_ppl()["test"]["text"])
    plain = tmp_path / "mine.txt"
    plain.write_text("one passage\n\nanother", encoding="utf-8")
    assert demo_utils.load_divergence_texts(text_file=str(plain))["test"]["text"] == [
        "one passage",
        "another",
    ]


def test_model_continues_its_world_stories(model, tokenizer, demo_utils):
    """Greedy continuations of the held-out story openings match the world's own endings
    (ROUGE-L about 0.73 for qeval-tiny; about 0.05 on qeval_sampling's general-English prompts)."""
    import torch

    from qeval_plugins.metrics.text import rouge_l

    scores = []
    for doc in demo_utils.load_sampling()["test"]:
        ids = torch.tensor([tokenizer(doc["prompt"]).input_ids])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=48,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        scores.append(rouge_l(text, doc["reference"]))
    assert sum(scores) / len(scores) > 0.6


def test_jsonl_files_are_valid():
    for name in ("facts.jsonl", "cloze.jsonl", "ppl.jsonl"):
        lines = (DEMO_DIR / name).read_text(encoding="utf-8").splitlines()
        assert lines and all(json.loads(line)["id"] == i for i, line in enumerate(lines))
