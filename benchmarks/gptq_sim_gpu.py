"""``gptq-sim`` against ``rtn`` at a realistic shape: wall time, peak GPU memory, logit SQNR.

A random-init Llama (``--preset 1b``: TinyLlama-1.1B's shape — hidden 2048, MLP 5632, 22 layers,
32 heads, 4 KV heads, vocab 32000; ``--preset tiny``: a few-second CPU smoke test) is built with
``LlamaForCausalLM(config)`` on the device, no download. The quantizers are driven directly,
without lm_eval: final options from each quantizer's own ``finalize_options`` and a
``LoadContext(device, dtype, calibration=CalibrationSet(...))`` whose windows are random token
ids (``--samples`` × ``--seqlen``, seed 0; no tokenizer needed).

Methods, each on a fresh copy of the same unquantized model, in this order: ``rtn`` int4 g128,
``gptq-sim`` int4 g128, ``gptq-sim`` mxfp4 (blocks of 32). For each:

* ``quantize s``: wall seconds of ``quantize(model, options, context)`` (``time.perf_counter``,
  ``torch.cuda.synchronize()`` before and after; calibration passes included);
* ``peak GiB``: ``torch.cuda.max_memory_allocated`` during the call (stats reset before it), and
  ``extra GiB``: that peak minus the memory allocated just before the call (the model copy and
  the reference model are resident then);
* ``logit SQNR dB``: ``10·log10(Σ ref² / Σ (ref − q)²)`` over all logits of ``--eval-windows``
  held-out random windows of ``--seqlen`` tokens (seed 1), ``ref`` those of the unquantized
  model, sums in float64.

Random weights and random tokens say nothing about language quality, but gptq-sim's SQNR
against rtn's at equal number format is still a valid check of the algorithm: GPTQ minimises
each layer's output error on the calibration inputs, which RTN ignores. The table is printed and,
with ``--out``, rewritten after each method (so a run cut short keeps what it measured).

    python benchmarks/gptq_sim_gpu.py --preset tiny                 # CPU smoke, seconds
    python benchmarks/gptq_sim_gpu.py --preset 1b --out table.md    # GPU
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a copy that is not installed

PRESETS = {
    "tiny": dict(
        hidden=128,
        intermediate=384,
        layers=2,
        heads=4,
        kv_heads=2,
        vocab=512,
        samples=8,
        seqlen=64,
        eval_windows=2,
        dtype="float32",
    ),
    "1b": dict(
        hidden=2048,
        intermediate=5632,
        layers=22,
        heads=32,
        kv_heads=4,
        vocab=32000,
        samples=128,
        seqlen=512,
        eval_windows=4,
        dtype="bfloat16",
    ),
}
METHODS = (  # (label, quantizer name, options given)
    ("rtn int4 g128", "rtn", {"format": "int", "bits": 4, "group_size": 128}),
    ("gptq-sim int4 g128", "gptq-sim", {"format": "int", "bits": 4, "group_size": 128}),
    ("gptq-sim mxfp4", "gptq-sim", {"format": "mxfp4"}),
)
GIB = 2**30


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--layers", type=int, help="decoder layers (default: the preset's)")
    parser.add_argument("--samples", type=int, help="calibration windows")
    parser.add_argument("--seqlen", type=int, help="tokens per window")
    parser.add_argument("--eval-windows", type=int, help="held-out windows for the SQNR")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument(
        "--deadline-s",
        type=float,
        help="skip a gptq-sim method whose predicted end (elapsed + the last gptq-sim run's "
        "seconds) is past this many seconds from the start",
    )
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:  # shape keys have no flag: always the preset's
            setattr(args, key, value)
    return args


def build_model(args, device: str, dtype):
    """The random-init Llama of the preset (seed 0), on ``device`` in ``dtype``, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        vocab_size=args.vocab,
        max_position_embeddings=max(2048, args.seqlen),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def random_calibration(args):
    """A CalibrationSet of ``samples`` × ``seqlen`` uniform random token ids (seed 0)."""
    from qeval_plugins.core.calibration import random_windows

    return random_windows(args.vocab, args.samples, args.seqlen)


def final_options(quantizer, given: dict) -> dict:
    """The quantizer's defaults updated with ``given``, through its own ``finalize_options``."""
    from qeval_plugins.core.options import resolve_options

    return quantizer.finalize_options(resolve_options(quantizer.name, quantizer.options, given))


def make_quantizer(name: str):
    from qeval_plugins.quantizers.gptq_sim import GptqSimQuantizer
    from qeval_plugins.quantizers.rtn import RtnQuantizer

    return {"rtn": RtnQuantizer, "gptq-sim": GptqSimQuantizer}[name]()


def warm_up(device: str, dtype) -> None:
    """Every method once on a 1-layer tiny model (kernels, solver libraries, imports)."""
    from qeval_plugins import LoadContext

    args = parse_args(["--preset", "tiny", "--layers", "1", "--samples", "2"])
    context = LoadContext(
        device=device, dtype=str(dtype).removeprefix("torch."), calibration=random_calibration(args)
    )
    for _, name, given in METHODS:
        quantizer = make_quantizer(name)
        quantizer.quantize(
            build_model(args, device, dtype), final_options(quantizer, given), context
        )


def eval_logits(model, windows, device: str):
    """float32 logits [windows, seqlen, vocab] of ``model`` on ``windows`` (one at a time)."""
    import torch

    with torch.no_grad():
        return torch.stack(
            [model(row[None].to(device), use_cache=False).logits[0].float() for row in windows]
        )


def sqnr_db(ref, q) -> float:
    """``10·log10(Σ ref² / Σ (ref − q)²)``, sums in float64."""
    signal = float(ref.double().pow(2).sum())
    noise = float((ref.double() - q.double()).pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


class Clock:
    """Wall seconds and peak allocated memory of a block of device work."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def start(self) -> None:
        self.sync()
        if self.cuda:
            self.before = self.torch.cuda.memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def stop(self) -> dict:
        self.sync()
        seconds = time.perf_counter() - self.started
        if not self.cuda:
            return {"seconds": seconds, "peak": None, "extra": None}
        peak = self.torch.cuda.max_memory_allocated()
        return {"seconds": seconds, "peak": peak / GIB, "extra": (peak - self.before) / GIB}


def table(header: str, rows: list[dict], layers: int) -> str:
    """The markdown table of the measured rows; SQNR gain is against the rtn row."""
    rtn = next((row["sqnr"] for row in rows if row["quantizer"] == "rtn"), None)

    def gib(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        header,
        "",
        "| method | quantize s | s / layer | peak GiB | extra GiB | logit SQNR dB | vs rtn dB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        gain = "" if rtn is None else f"{row['sqnr'] - rtn:+.2f}"
        lines.append(
            f"| {row['label']} | {row['seconds']:.2f} | {row['seconds'] / layers:.3f} | "
            f"{gib(row['peak'])} | "
            f"{gib(row['extra'])} | {row['sqnr']:.2f} | {gain} |"
        )
    return "\n".join(lines) + "\n"


def describe(args, device: str) -> str:
    import torch
    import transformers

    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.machine()
    return (
        f"### preset {args.preset}: {args.layers} layers, hidden {args.hidden}, MLP "
        f"{args.intermediate}, {args.dtype}, calibration {args.samples} × {args.seqlen} random "
        f"tokens, SQNR on {args.eval_windows} × {args.seqlen} — {where}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def main(argv=None) -> int:
    import torch

    from qeval_plugins import LoadContext

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    began = time.perf_counter()
    warm_up(device, dtype)
    print(f"warm-up: {time.perf_counter() - began:.1f} s")
    built = time.perf_counter()
    base = build_model(args, device, dtype)
    params = sum(p.numel() for p in base.parameters())
    print(f"model: {params / 1e6:.1f}M parameters, built in {time.perf_counter() - built:.1f} s")
    generator = torch.Generator().manual_seed(1)
    held_out = torch.randint(0, args.vocab, (args.eval_windows, args.seqlen), generator=generator)
    reference = eval_logits(base, held_out, device)
    context = LoadContext(device=device, dtype=args.dtype, calibration=random_calibration(args))
    header = describe(args, device)
    clock = Clock(device)
    rows: list[dict] = []
    last_gptq = 0.0
    for label, name, given in METHODS:
        predicted = time.perf_counter() - began + (last_gptq if name == "gptq-sim" else 0.0)
        if args.deadline_s and predicted > args.deadline_s:
            print(f"{label}: skipped, predicted to end at {predicted:.0f} s", flush=True)
            continue
        quantizer = make_quantizer(name)
        options = final_options(quantizer, given)
        model = copy.deepcopy(base)
        clock.start()
        model = quantizer.quantize(model, options, context)
        measured = clock.stop()
        sqnr = sqnr_db(reference, eval_logits(model, held_out, device))
        if name == "gptq-sim":
            last_gptq = measured["seconds"]
        rows.append({"label": label, "quantizer": name, "sqnr": sqnr, **measured})
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        print(f"{label}: {measured['seconds']:.2f} s, SQNR {sqnr:.2f} dB", flush=True)
        if args.out:
            args.out.write_text(table(header, rows, args.layers))
    print(table(header, rows, args.layers))
    print(f"total {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
