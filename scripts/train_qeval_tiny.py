"""Build ``qeval-tiny``: the small Llama model embedded in qeval, and its demo tasks.

What this script does
---------------------
1. **Generates its own English corpus** with the fictional world and grammar of
   :mod:`qeval_plugins.study.world_corpus` (nothing is downloaded; the module's
   docstring describes the world and the document kinds). The corpus is original,
   self-generated text that the project may ship under its own licence (Apache-2.0).
2. **Trains a byte-level BPE tokenizer** with the ``tokenizers`` library
   (special tokens ``<s>``, ``</s>``, ``<unk>``, ``<pad>``; no BOS is added
   automatically, GPT-2 style, which is what lm-evaluation-harness expects for
   rolling log-likelihoods) and wraps it as a transformers
   ``PreTrainedTokenizerFast``.
3. **Trains a ``LlamaForCausalLM``** (hidden 128, MLP 384, 4 layers, 4 heads,
   2 KV heads, untied embeddings, 512 positions) with AdamW on CPU, on packed
   ``<s> document </s>`` streams, and prints the final train and held-out loss.
4. **Saves** model (float32 safetensors), tokenizer and generation config to
   ``qeval_plugins/embedded/qeval-tiny/``.
5. **Writes the demo task data** (``tasks/qeval_demo/*.jsonl``) from the same
   world: multiple-choice fact questions, held-out cloze prompts, held-out
   passages for perplexity and held-out story openings with their continuations
   (the prompts of the demo's temperature sweep). Cloze and story prompts are
   checked not to occur verbatim in the training corpus, passages and stories not
   to be training documents.

Everything is seeded (``--seed``, default 1234); the world itself is fixed by
``WORLD_SEED`` of the world module so that the model and the task data always describe the same
world. A rerun with the defaults reproduces the shipped files byte for byte. Training
uses two CPU threads; the whole script takes about 6 minutes on an idle 2-core machine
(8 minutes with other work competing for the cores).

How to rerun
------------
From the repository root, with the project's virtual environment active::

    python scripts/train_qeval_tiny.py                 # corpus, tokenizer, model, tasks
    python scripts/train_qeval_tiny.py --write-tasks   # only rewrite tasks/qeval_demo/*.jsonl
    python scripts/train_qeval_tiny.py --steps 200 --output /tmp/qeval-tiny  # quick trial

The model card (``README.md`` in the output folder) is written by hand and is
not touched by this script.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from qeval_plugins.study.training import pack
from qeval_plugins.study.world_corpus import (
    COLOURS,
    JOBS,
    NUMBER_WORDS,
    CorpusGenerator,
    World,
    build_world,
    cap,
    fact_prompts,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "qeval_plugins" / "embedded" / "qeval-tiny"
DEFAULT_TASKS_DIR = REPO_ROOT / "tasks" / "qeval_demo"

# --------------------------------------------------------------------------
# Demo tasks (tasks/qeval_demo/*.jsonl)
# --------------------------------------------------------------------------


def make_facts_task(world: World, rng: random.Random) -> list[dict]:
    """Multiple-choice fact questions: four same-kind choices, one correct."""
    pools = {
        "capital": [c.capital for c in world.countries],
        "town": world.towns,
        "pet": [a.name for a in world.animals],
        "colour": COLOURS,
        "job": JOBS,
    }
    facts = fact_prompts(world)
    # all capitals, and 80 of the 100 person facts -> 92 questions
    person_facts = [f for f in facts if f[0] != "capital"]
    chosen = [f for f in facts if f[0] == "capital"] + rng.sample(person_facts, 80)
    rows = []
    for i, (kind, context, answer) in enumerate(chosen):
        distractors = rng.sample([x for x in pools[kind] if x != answer], 3)
        choices = [answer, *distractors]
        rng.shuffle(choices)
        rows.append(
            {
                "id": i,
                "kind": kind,
                "context": context,
                "choices": choices,
                "label": choices.index(answer),
            }
        )
    return rows


def make_cloze_task(world: World, rng: random.Random, corpus_text: str) -> list[dict]:
    """Held-out short completions: a fresh framing sentence, then a known fact or number pattern.

    The whole prompt never occurs in the training corpus (asserted); only its last
    clause is a phrase the model has seen.
    """
    rows: list[dict] = []
    frames = [
        "Here is a question. {q}",
        "I asked an old friend about it. {q}",
        "Write the missing word. {q}",
        "Everyone in the village knows this. {q}",
    ]
    items: list[tuple[str, str, str]] = []
    for c in rng.sample(world.countries, 8):
        items.append(("capital", f"The capital of {c.name} is", c.capital))
    for p in rng.sample(world.people, 8):
        items.append(("town", f"{p.name} lives in", p.town))
    for p in rng.sample(world.people, 6):
        items.append(("pet", f"{p.name} has a pet", p.pet))
    for p in rng.sample(world.people, 4):
        items.append(("colour", f"{p.name}'s favourite colour is", p.colour))
    for n in rng.sample(range(1, 20), 7):
        w, nxt = NUMBER_WORDS[n], NUMBER_WORDS[n + 1]
        items.append(("count", f"What number comes after {w}? After {w} comes", nxt))
    for a, b in rng.sample([(a, b) for a in range(1, 10) for b in range(1, 10)], 7):
        prompt = f"Quick question. {cap(NUMBER_WORDS[a])} plus {NUMBER_WORDS[b]} is"
        items.append(("sum", prompt, NUMBER_WORDS[a + b]))
    for i, (kind, prompt, target) in enumerate(items):
        context = rng.choice(frames).format(q=prompt) if kind not in ("count", "sum") else prompt
        assert context not in corpus_text, f"cloze prompt occurs in training corpus: {context!r}"
        rows.append({"id": i, "kind": kind, "context": context, "target": target})
    return rows


def make_ppl_task(world: World, seed: int, train_docs: set[str], n: int = 30) -> list[dict]:
    """Held-out passages (not training documents) for rolling perplexity."""
    gen = CorpusGenerator(world, random.Random(seed + 7919))
    rows: list[dict] = []
    while len(rows) < n:
        text = "\n".join(
            [gen.travel_story(), gen.pet_story(), gen.dialogue()]
            if len(rows) % 2
            else [gen.market_story(), gen.profile(), gen.gift_story()]
        )
        if text in train_docs:
            continue
        rows.append({"id": len(rows), "text": text})
    return rows


#: (story kind, how many): the sampling prompts' documents; single-piece stories whose
#: continuation the world fixes in part (names, towns, pets, colours) and leaves open in part
SAMPLING_KINDS = (
    ("gift_story", 3),
    ("pet_story", 3),
    ("work_day", 2),
    ("market_story", 3),
    ("travel_story", 3),
    ("dialogue", 2),
)
#: a sentence ends at . ? ! (or a closing quote after one) followed by a capital or a quote
SENTENCE_END = re.compile(r'(?<=[.?!"])\s+(?=[A-Z"])')
MAX_PROMPT_SENTENCES = 3
MAX_REFERENCE_WORDS = 32  # about 40 tokens: the demo sweep generates at most 48


def make_sampling_task(world: World, seed: int, corpus_text: str, train_docs: set[str]) -> list:
    """Held-out story openings and the world's own continuations, for the sampling sweep.

    Each row is one fresh single-piece story (:data:`SAMPLING_KINDS`, from a generator seeded
    apart from the corpus and from ppl.jsonl): ``prompt`` is its shortest opening of whole
    sentences (at most :data:`MAX_PROMPT_SENTENCES`) that occurs nowhere in the training corpus
    (asserted, as for the cloze prompts), ``reference`` the rest of the story (at most
    :data:`MAX_REFERENCE_WORDS` words). A story that is itself a training document is skipped.
    """
    gen = CorpusGenerator(world, random.Random(seed + 4243))
    rows: list[dict] = []
    for kind, count in SAMPLING_KINDS:
        found = 0
        while found < count:
            story = getattr(gen, kind)()
            parts = SENTENCE_END.split(story)
            cut = next(
                (
                    n
                    for n in range(1, MAX_PROMPT_SENTENCES + 1)
                    if " ".join(parts[:n]) not in corpus_text
                ),
                None,
            )
            if cut is None or cut >= len(parts) or story in train_docs:
                continue
            prompt, reference = " ".join(parts[:cut]), " ".join(parts[cut:])
            if len(reference.split()) > MAX_REFERENCE_WORDS:
                continue
            assert prompt not in corpus_text, (
                f"sampling prompt occurs in training corpus: {prompt!r}"
            )
            rows.append(
                {
                    "id": f"w{len(rows) + 1:02d}",
                    "kind": kind,
                    "prompt": prompt,
                    "reference": reference,
                }
            )
            found += 1
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSON Lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_tasks(world: World, train_docs: list[str], tasks_dir: Path, seed: int) -> None:
    """Write facts.jsonl, cloze.jsonl, ppl.jsonl and sampling.jsonl into ``tasks_dir``."""
    rng = random.Random(seed + 31337)
    corpus_text = "\n".join(train_docs)
    write_jsonl(tasks_dir / "facts.jsonl", make_facts_task(world, rng))
    write_jsonl(tasks_dir / "cloze.jsonl", make_cloze_task(world, rng, corpus_text))
    write_jsonl(tasks_dir / "ppl.jsonl", make_ppl_task(world, seed, set(train_docs)))
    sampling = make_sampling_task(world, seed, corpus_text, set(train_docs))
    write_jsonl(tasks_dir / "sampling.jsonl", sampling)
    print(f"wrote demo task data to {tasks_dir}")


# --------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------

SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )


def build_model(vocab_size: int, tokenizer):
    """The qeval-tiny ``LlamaForCausalLM``: 128 hidden, 384 MLP, 4 layers, 4 heads, 2 KV heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


@dataclass
class TrainArgs:
    """Optimisation settings."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float
    warmup: int
    seed: int


def evaluate_loss(model, data, seq_len: int, max_windows: int = 64) -> float:
    """Mean next-token loss over consecutive non-overlapping windows of ``data``."""
    import torch

    n = min(max_windows, (len(data) - 1) // seq_len)
    x = data[: n * seq_len + 1]
    inputs = x[:-1].view(n, seq_len)
    targets = x[1:].view(n, seq_len)
    model.eval()
    with torch.no_grad():
        losses = []
        for i in range(0, n, 16):
            logits = model(input_ids=inputs[i : i + 16]).logits
            losses.append(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),
                    targets[i : i + 16].reshape(-1),
                    reduction="sum",
                )
            )
    model.train()
    return float(torch.stack(losses).sum() / targets.numel())


def train(model, train_data, val_data, args: TrainArgs) -> tuple[float, float]:
    """AdamW with linear warm-up and cosine decay on random windows of ``train_data``."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    t0 = time.time()
    running = None
    for step in range(args.steps):
        starts = torch.randint(
            0, len(train_data) - args.seq_len - 1, (args.batch_size,), generator=gen
        )
        batch = torch.stack([train_data[s : s + args.seq_len + 1] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            elapsed = time.time() - t0
            print(
                f"step {step:5d}  loss {running:.3f}  lr {lr_at(step):.2e}  {elapsed:6.1f}s",
                flush=True,
            )
    train_loss = evaluate_loss(model, train_data, args.seq_len)
    val_loss = evaluate_loss(model, val_data, args.seq_len)
    return train_loss, val_loss


def save(model, tokenizer, output: Path) -> None:
    """Save float32 safetensors weights, tokenizer and generation config into ``output``."""
    from transformers import GenerationConfig

    output.mkdir(parents=True, exist_ok=True)
    for stale in ("model.safetensors", "pytorch_model.bin"):
        (output / stale).unlink(missing_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    # transformers 5 records its internal class name; the generic name also loads in 4.x tools
    cfg = output / "tokenizer_config.json"
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace(
            '"tokenizer_class": "TokenizersBackend"', '"tokenizer_class": "PreTrainedTokenizerFast"'
        ),
        encoding="utf-8",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="model output folder (default: %(default)s)",
    )
    p.add_argument(
        "--tasks-dir",
        type=Path,
        default=DEFAULT_TASKS_DIR,
        help="demo task data folder (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=600, help="optimiser steps (default: %(default)s)")
    p.add_argument(
        "--seed",
        type=int,
        default=1234,
        help="seed for corpus sampling, init and batches (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument(
        "--train-docs", type=int, default=40000, help="number of generated training documents"
    )
    p.add_argument(
        "--write-tasks",
        action="store_true",
        help="only (re)write the demo task JSONL files, no training",
    )
    p.add_argument(
        "--no-tasks", action="store_true", help="train only, do not write the demo task files"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: generate corpus, write tasks, train tokenizer and model, save."""
    args = parse_args(argv)
    t_start = time.time()
    world = build_world()
    train_docs = CorpusGenerator(world, random.Random(args.seed)).documents(args.train_docs)
    seen = set(train_docs)
    val_gen = CorpusGenerator(world, random.Random(args.seed + 1))
    val_docs = [d for d in val_gen.documents(2000) if d not in seen]
    n_chars = sum(len(d) for d in train_docs)
    print(f"corpus: {len(train_docs)} training docs, {n_chars / 1e6:.2f} MB of text", flush=True)

    if not args.no_tasks:
        write_tasks(world, train_docs, args.tasks_dir, args.seed)
    if args.write_tasks:
        return

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    tokenizer = train_tokenizer(train_docs, args.vocab_size)
    train_data = pack(tokenizer, train_docs)
    val_data = pack(tokenizer, val_docs)
    print(
        f"tokenizer: {len(tokenizer)} tokens; "
        f"train {len(train_data):,} tokens, held-out {len(val_data):,} tokens",
        flush=True,
    )

    model = build_model(len(tokenizer), tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    targs = TrainArgs(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        warmup=max(1, min(60, args.steps // 10)),
        seed=args.seed,
    )
    train_loss, val_loss = train(model, train_data, val_data, targs)
    save(model, tokenizer, args.output)
    size = sum(f.stat().st_size for f in args.output.iterdir() if f.is_file())
    print(f"final train loss {train_loss:.4f}  held-out loss {val_loss:.4f}")
    print(f"saved to {args.output} ({size / 1e6:.2f} MB) in {time.time() - t_start:.0f}s total")


if __name__ == "__main__":
    main()
