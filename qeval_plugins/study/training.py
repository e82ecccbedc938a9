"""Train the study's model family (:mod:`.family`) on the fictional world's corpus.

Every member trains on packed ``<s> document </s>`` streams of
``CorpusGenerator(build_world(), random.Random(CORPUS_SEED_OFFSET + seed))`` (tokenized with the
embedded ``qeval-tiny`` tokenizer), so members of one seed see the same documents in the same
order whatever their size or recipe; the seed also fixes the initial weights and the dropout
masks. Optimisation, as for qeval-tiny: AdamW (betas 0.9, 0.95), learning rate
:data:`LEARNING_RATE` with linear warm-up over ``min(60, steps // 10)`` steps and cosine decay to
a tenth, on random windows of :data:`SEQ_LEN` tokens, :data:`BATCH_SIZE` per step. The recipe
adds weight decay, dropout, gradient clipping or mixed precision (:class:`.family.Recipe`).

A run is deterministic: the same member and ``steps`` give bit-identical weights (on one
device and thread count). At each of :data:`.family.CHECKPOINT_FRACTIONS` the trainer writes the
model folder (float32 safetensors, tokenizer, ``config.json`` with a ``"qeval_family"`` block)
into a temporary folder and renames it into place, after the resume state
(``<pct>pct.state.pt``: optimizer, loss scale, random-number states, step). An interrupted
member resumes from its last checkpoint and ends with the weights of an uninterrupted run; a
member whose last checkpoint exists is reused; the resume states go once it is finished.

The default budget, :data:`DEFAULT_STEPS` steps per member, trained :func:`.family.default_family`
(18 members) in 20 minutes on one CPU thread of the shared 2-core machine with other work running
(load average about 5): 45-85 s for an xs or s member, 55-75 s for m, 125-135 s for l, the
low-precision and dropout recipes about 1.2x base (``benchmarks/family_training.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
from qeval_plugins.core.errors import QevalError
from qeval_plugins.study.family import (
    CHECKPOINT_FRACTIONS,
    VOCAB_SIZE,
    Member,
    checkpoint_dir,
)
from qeval_plugins.study.world_corpus import CorpusGenerator, build_world

TOKENIZER_DIR = EMBEDDED_MODELS["qeval-tiny"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
DEFAULT_STEPS = 180
BATCH_SIZE = 16
SEQ_LEN = 128
LEARNING_RATE = 3e-3
BETAS = (0.9, 0.95)
#: training documents per seed, and held-out documents (another generator) for the final loss
CORPUS_DOCS = 10_000
HELD_OUT_DOCS = 1_000
CORPUS_SEED_OFFSET = 10_000
HELD_OUT_SEED_OFFSET = 20_000
#: windows of SEQ_LEN tokens in each recorded loss
EVAL_WINDOWS = 32
LOG_EVERY = 50
#: torch CPU threads. One, not two: on the shared 2-core machine, with other work running, a
#: 2048x32 @ 32x96 linear took 23 ms on two threads against 0.45 ms on one (threads wait on
#: each other), and these models are too small to gain much from a second thread when idle
THREADS = 1


def warmup_steps(steps: int) -> int:
    """``max(1, min(60, steps // 10))``: the linear warm-up of qeval-tiny's schedule."""
    return max(1, min(60, steps // 10))


def learning_rate(step: int, steps: int) -> float:
    """Linear warm-up to :data:`LEARNING_RATE`, then cosine decay to a tenth of it at ``steps``."""
    warmup = warmup_steps(steps)
    if step < warmup:
        return LEARNING_RATE * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def checkpoint_steps(steps: int) -> dict[int, float]:
    """Step count after which each checkpoint is saved -> its fraction (``round(f * steps)``)."""
    return {max(1, round(f * steps)): f for f in CHECKPOINT_FRACTIONS}


def load_tokenizer():
    """The embedded qeval-tiny tokenizer (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def pack(tokenizer, docs: list[str]):
    """``<s> doc </s>`` for every document, concatenated into one 1-D LongTensor."""
    import torch

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.append(bos)
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def corpus(seed: int, tokenizer):
    """Packed training and held-out token streams of a seed (no held-out doc is a training doc)."""
    world = build_world()
    train_docs = CorpusGenerator(world, random.Random(CORPUS_SEED_OFFSET + seed)).documents(
        CORPUS_DOCS
    )
    seen = set(train_docs)
    held_gen = CorpusGenerator(world, random.Random(HELD_OUT_SEED_OFFSET + seed))
    held_docs = [d for d in held_gen.documents(HELD_OUT_DOCS) if d not in seen]
    return pack(tokenizer, train_docs), pack(tokenizer, held_docs)


def build_model(member: Member, tokenizer):
    """A freshly initialised ``LlamaForCausalLM`` of the member's size (seeded by its seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    size = member.size
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        attention_dropout=member.recipe.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(member.seed)
    return LlamaForCausalLM(config)


def add_mlp_dropout(model, p: float) -> None:
    """Dropout with probability ``p`` on every MLP output (training mode only), before the
    residual add: the residual dropout that LlamaConfig lacks. Hooks are not saved."""
    import torch

    def hook(module, args, output):
        return torch.nn.functional.dropout(output, p, module.training)

    for layer in model.model.layers:
        layer.mlp.register_forward_hook(hook)


def make_optimizer(model, weight_decay: float):
    """AdamW: ``weight_decay`` on matrices, none on norm weights."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LEARNING_RATE,
        betas=BETAS,
    )


def autocast(device: str, precision: str):
    """``torch.autocast`` to ``precision`` on an accelerator; nothing for float32 or on CPU,
    where :func:`emulate_low_precision` stands in for it."""
    import torch

    device_type = torch.device(device).type
    if precision == "float32" or device_type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, precision))


def emulate_low_precision(model, precision: str) -> None:
    """Give every ``nn.Linear`` of ``model`` the numerics of a ``precision`` autocast matmul.

    On CPU, torch 2.13's bfloat16 and float16 matmuls are about 50x slower than float32 ones
    (measured on this project's 2-core machine: a 2048x64 @ 64x2048 product takes 1.7 s against
    0.04 s), so CPU autocast cannot train the family in its budget. Instead each linear layer
    rounds its input and its weight to ``precision``, multiplies in float32 (as a tensor core
    accumulates) and rounds the output to ``precision``; the backward pass rounds the incoming
    and outgoing gradients too, so float16's range (overflow past 65504, underflow below 6e-8)
    is real and the GradScaler has work to do. The master weights and the optimizer stay
    float32. Attention scores, softmax and norms stay float32 (autocast keeps softmax and norms
    in float32 too; its attention products would be in ``precision``).
    """
    import types

    import torch

    dtype = getattr(torch, precision)

    class Round(torch.autograd.Function):
        """Round to ``dtype`` and back, forward and backward."""

        @staticmethod
        def forward(ctx, x):
            return x.to(dtype).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            return grad.to(dtype).to(grad.dtype)

    def forward(self, x):
        out = torch.nn.functional.linear(Round.apply(x), Round.apply(self.weight), self.bias)
        return Round.apply(out)

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(forward, module)


def evaluate_loss(model, data, device: str, windows: int = EVAL_WINDOWS) -> float:
    """Mean next-token cross-entropy (nats) over the first ``windows`` non-overlapping windows
    of :data:`SEQ_LEN` tokens of ``data``, in float32."""
    import torch

    n = min(windows, (len(data) - 1) // SEQ_LEN)
    x = data[: n * SEQ_LEN + 1].to(device)
    inputs, targets = x[:-1].view(n, SEQ_LEN), x[1:].view(n, SEQ_LEN)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1)
        )
    model.train(was_training)
    return float(loss)


def state_path(member: Member, fraction: float, root: Path | None) -> Path:
    """The resume state saved next to a checkpoint folder: ``<pct>pct.state.pt``."""
    folder = checkpoint_dir(member, fraction, root)
    return folder.with_name(folder.name + ".state.pt")


def save_checkpoint(model, member: Member, fraction: float, meta: dict, state: dict, root) -> Path:
    """Write the resume state, then the model folder (temporary folder renamed into place)."""
    import torch

    target = checkpoint_dir(member, fraction, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fraction < 1.0:
        state_file = state_path(member, fraction, root)
        tmp_state = state_file.with_name("." + state_file.name + ".tmp")
        torch.save(state, tmp_state)
        tmp_state.replace(state_file)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            shutil.copyfile(TOKENIZER_DIR / name, tmp / name)
        config_file = tmp / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["qeval_family"] = meta
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resume_point(member: Member, steps: int, root) -> tuple[float, dict] | None:
    """The latest saved (fraction, state) of ``member`` trained with ``steps``, if any."""
    import torch

    for fraction in sorted(CHECKPOINT_FRACTIONS[:-1], reverse=True):
        state_file = state_path(member, fraction, root)
        config = checkpoint_dir(member, fraction, root) / "config.json"
        if state_file.exists() and config.exists():
            state = torch.load(state_file, weights_only=True)
            if state["steps"] == steps:
                return fraction, state
    return None


def train_member(member: Member, data, tokenizer, *, root, steps, device, progress) -> None:
    """Train ``member`` for ``steps`` steps (or resume it), saving every checkpoint."""
    import torch
    from safetensors.torch import load_file

    recipe = member.recipe
    model = build_model(member, tokenizer).to(device)
    if recipe.dropout:
        add_mlp_dropout(model, recipe.dropout)
    if recipe.precision != "float32" and torch.device(device).type == "cpu":
        emulate_low_precision(model, recipe.precision)
    model.train()
    opt = make_optimizer(model, recipe.weight_decay)
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type, enabled=recipe.precision == "float16")
    batches = torch.Generator().manual_seed(member.seed)
    train_data, held_data = data
    start, running = 0, None
    resumed = resume_point(member, steps, root)
    if resumed is not None:
        fraction, state = resumed
        weights = load_file(checkpoint_dir(member, fraction, root) / "model.safetensors")
        model.load_state_dict(weights)
        opt.load_state_dict(state["optimizer"])
        if state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        batches.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], torch.device(device))
        start, running = state["step"], state["running_loss"]
        progress(f"  {member.name}: resuming from {round(fraction * 100)}pct (step {start})")
    saves = checkpoint_steps(steps)
    t0 = time.time()
    for step in range(start, steps):
        starts = torch.randint(0, len(train_data) - SEQ_LEN - 1, (BATCH_SIZE,), generator=batches)
        batch = torch.stack([train_data[s : s + SEQ_LEN + 1] for s in starts.tolist()]).to(device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps)
        with autocast(device, recipe.precision):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, VOCAB_SIZE), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        scaler.step(opt)
        scaler.update()
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if (step + 1) % LOG_EVERY == 0:
            progress(f"  {member.name} step {step + 1}/{steps} loss {running:.3f}")
        if step + 1 in saves:
            fraction = saves[step + 1]
            meta = {
                "recipe": recipe.name,
                "size": member.size.name,
                "seed": member.seed,
                "fraction": fraction,
                "steps": step + 1,
                "total_steps": steps,
                "non_embedding_params": member.size.non_embedding_params,
                "train_loss": evaluate_loss(model, train_data, device),
                "held_out_loss": evaluate_loss(model, held_data, device),
                "seconds": round(time.time() - t0, 2),
            }
            state = {
                "steps": steps,
                "step": step + 1,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "batch_rng": batches.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": (
                    torch.cuda.get_rng_state(torch.device(device))
                    if device_type == "cuda"
                    else None
                ),
                "running_loss": running,
            }
            save_checkpoint(model, member, fraction, meta, state, root)
    for fraction in CHECKPOINT_FRACTIONS[:-1]:
        state_path(member, fraction, root).unlink(missing_ok=True)


def train_family(
    members: list[Member],
    *,
    root: Path | None = None,
    steps: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] = print,
) -> dict[str, dict[float, Path]]:
    """Train the members whose last checkpoint is missing (resuming interrupted ones).

    ``steps`` per member defaults to :data:`DEFAULT_STEPS`; on CPU torch uses :data:`THREADS`
    threads. Returns ``member.name -> {fraction: checkpoint folder}``.
    """
    import torch

    steps = DEFAULT_STEPS if steps is None else steps
    if torch.device(device).type == "cpu":
        torch.set_num_threads(THREADS)
    tokenizer = None
    corpora: dict[int, tuple] = {}
    out: dict[str, dict[float, Path]] = {}
    for member in members:
        folders = {f: checkpoint_dir(member, f, root) for f in CHECKPOINT_FRACTIONS}
        out[member.name] = folders
        if (folders[1.0] / "config.json").exists():
            check_trained_steps(member, folders[1.0], steps)
            progress(f"{member.name}: already trained ({folders[1.0]})")
            continue
        tokenizer = tokenizer or load_tokenizer()
        if member.seed not in corpora:
            corpora[member.seed] = corpus(member.seed, tokenizer)
        t0 = time.time()
        train_member(
            member,
            corpora[member.seed],
            tokenizer,
            root=root,
            steps=steps,
            device=device,
            progress=progress,
        )
        meta = json.loads((folders[1.0] / "config.json").read_text(encoding="utf-8"))
        block = meta["qeval_family"]
        progress(
            f"{member.name}: {steps} steps in {time.time() - t0:.1f}s, "
            f"train loss {block['train_loss']:.3f}, held-out loss {block['held_out_loss']:.3f}"
        )
    return out


def check_trained_steps(member: Member, folder: Path, steps: int) -> None:
    """Refuse a finished member trained for another number of steps than ``steps`` (reusing it
    would report a 180-step model as a 400-step one)."""
    block = json.loads((folder / "config.json").read_text(encoding="utf-8"))["qeval_family"]
    if block["total_steps"] != steps:
        raise QevalError(
            f"{member.name} in {folder.parent} was trained for {block['total_steps']} steps, not "
            f"{steps}: give --steps {block['total_steps']}, or set QEVAL_CACHE_DIR to another "
            "folder to train a family with other settings"
        )
