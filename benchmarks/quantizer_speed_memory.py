"""Speed and memory of every built-in quantizer, measured side by side in one process.

For a random-init Llama of a realistic shape (no download: the config is built here and saved once
to a temporary directory in bfloat16), each quantizer goes through qeval's own loading path
(``Quantizer.load_kwargs`` + ``from_pretrained`` + ``Quantizer.quantize``, as ``--model qeval``
does) and is measured for:

* parameter bytes as stored (MB = 2**20 bytes) and bits per parameter = 8 · bytes / #params;
* load + quantize wall time (s);
* peak memory while loading and running (CUDA: ``torch.cuda.max_memory_allocated``, GiB; CPU:
  the peak RSS over the RSS before loading, GiB, the peak reset before each quantizer through
  Linux's ``/proc/self/clear_refs`` — the mapped checkpoint's pages count too);
* prefill throughput: tokens/s of a forward pass over ``batch × prompt_len`` tokens (what
  loglikelihood requests cost);
* decode throughput: new tokens/s of greedy generation of ``new_tokens`` tokens, batch 1;
* weight SQNR (dB) of one MLP projection through the ``qeval_dequantize_weight`` hook.

Random weights make the *quality* meaningless but speed and memory are those of the real shape.

    python benchmarks/quantizer_speed_memory.py --preset 1b --device cuda   # GPU (records)
    python benchmarks/quantizer_speed_memory.py --preset tiny --device cpu  # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {
    # TinyLlama-1.1B's shape
    "1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
    ),
    # Llama-2-7B's shape
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
}
DEFAULT_SPECS = (
    "none,bnb-int8,bnb-nf4,bnb-nf4-dq,bnb-fp4,bnb-fp4-dq,rtn:bits=4,gptq-sim:bits=4,gptq:bits=4"
)


def build_checkpoint(preset: str, directory: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[preset], max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    # GPTQModel loads a tokenizer from the checkpoint (the windows are token ids, made here)
    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    for file in EMBEDDED_MODELS["qeval-tiny"].glob("tokenizer*"):
        shutil.copy(file, directory / file.name)
    del model
    gc.collect()
    return directory


def _status_gib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``: kB) in GiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 2**20


def reset_peak_rss() -> float:
    """Reset the process's peak RSS to its current RSS (Linux); returns that RSS in GiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_gib("VmRSS")


def peak_rss_gib() -> float:
    """The peak RSS since the last :func:`reset_peak_rss`, GiB."""
    return _status_gib("VmHWM")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_context(plan, checkpoint: Path, device: str, args):
    """What the backend gives a quantizer: the checkpoint's tokenizer; calibrated ones get
    ``--calibration`` random windows (a random-init model has no language to calibrate on) and a
    temporary cache folder."""
    from qeval_plugins.core.calibration import random_windows
    from qeval_plugins.core.quantizer import LoadContext

    samples, seqlen = args.calibration
    calibration = None
    if plan.quantizer.calibrated:
        vocab = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
        calibration = random_windows(vocab, samples, seqlen)
    from transformers import AutoTokenizer

    return LoadContext(
        device=device,
        dtype="bfloat16",
        checkpoint=str(checkpoint),
        tokenizer=AutoTokenizer.from_pretrained(checkpoint),  # AutoRound's API requires one
        calibration=calibration,
        cache_dir=tempfile.mkdtemp(prefix="qeval-bench-"),
    )


def measure(spec: str, checkpoint: Path, device: str, args) -> dict:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from qeval_plugins.backend.checkpoints import checkpoint_parameter_count
    from qeval_plugins.backend.memory import model_storage_bytes
    from qeval_plugins.core.plan import check_spec
    from qeval_plugins.core.registry import get_registry

    plan = check_spec(spec, device)
    quantizer = plan.quantizer
    context = load_context(plan, checkpoint, device, args)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_before = 0.0 if device.startswith("cuda") else reset_peak_rss()
    started = time.perf_counter()
    extra = quantizer.load_kwargs(plan.options, context)
    extra.setdefault("dtype", torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, device_map={"": device}, **extra)
    model = quantizer.quantize(model, plan.options, context)
    sync(device)
    load_seconds = time.perf_counter() - started
    model.eval()

    n_params = checkpoint_parameter_count(str(checkpoint))
    stored = model_storage_bytes(model)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (args.batch, args.prompt_len), generator=generator).to(device)
    with torch.no_grad():
        model(prompt)  # warm-up at the measured shapes (kernel selection, allocator, caches)
        model.generate(
            prompt[:1, :32], max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0
        )
        sync(device)
        started = time.perf_counter()
        for _ in range(args.repeats):
            model(prompt)
        sync(device)
        prefill = args.repeats * prompt.numel() / (time.perf_counter() - started)

        single = prompt[:1, :32]
        started = time.perf_counter()
        model.generate(
            single,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        sync(device)
        decode = args.new_tokens / (time.perf_counter() - started)

    name = "model.layers.0.mlp.up_proj"
    dense = get_registry().manager.hook.qeval_dequantize_weight(module=model.get_submodule(name))
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as handle:
        reference = handle.get_tensor(f"{name}.weight").double()
    noise = (reference - dense.double().cpu()).pow(2).sum()
    sqnr = math.inf if noise == 0 else float(10 * torch.log10(reference.pow(2).sum() / noise))

    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = max(peak_rss_gib() - rss_before, 0.0)
    del model
    gc.collect()
    return {
        "spec": spec,
        "params_M": n_params / 1e6,
        "stored_MB": stored / 2**20,
        "bits_per_param": 8 * stored / n_params,
        "load_quantize_s": load_seconds,
        "peak_GiB": peak,
        "prefill_tok_s": prefill,
        "decode_tok_s": decode,
        "weight_sqnr_dB": sqnr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quantizers", default=DEFAULT_SPECS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--calibration",
        type=int,
        nargs=2,
        default=(32, 512),
        metavar=("SAMPLES", "SEQLEN"),
        help="random calibration windows for calibrated quantizers (default: 32 512)",
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = build_checkpoint(args.preset, Path(scratch))
        measure("none", checkpoint, args.device, args)  # process warm-up: CUDA context, libs
        for spec in args.quantizers.split(","):
            rows.append(measure(spec, checkpoint, args.device, args))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"\npreset {args.preset} on {device_name}, torch {torch.__version__}; batch "
        f"{args.batch}×{args.prompt_len} prefill, {args.new_tokens} new tokens decode (batch 1);"
        f" decode × = decode tok/s relative to {base['spec']}"
    )
    header = (
        f"{'quantizer':<14}{'MB':>9}{'bits/p':>8}{'load s':>8}{'peak GiB':>9}"
        f"{'prefill tok/s':>15}{'decode tok/s':>13}{'decode ×':>9}"
        f"{'W-SQNR dB':>10}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['spec']:<14}{row['stored_MB']:>9.1f}{row['bits_per_param']:>8.2f}"
            f"{row['load_quantize_s']:>8.2f}{row['peak_GiB']:>9.3f}{row['prefill_tok_s']:>15.0f}"
            f"{row['decode_tok_s']:>13.1f}{row['decode_tok_s'] / base['decode_tok_s']:>9.2f}"
            f"{row['weight_sqnr_dB']:>10.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"preset": args.preset, "device": device_name, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
