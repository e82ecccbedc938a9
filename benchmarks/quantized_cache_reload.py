"""Loading a quantized model from qeval's quantized-model cache vs loading the checkpoint itself.

Goal: a second run of a calibrated spec (``gptq-sim`` here) loads its cached quantized model in at
most 1.2× the time ``quantizer=none`` takes to load the unquantized checkpoint.

Method: a random-init Llama of ``--hidden``/``--layers`` (float32 safetensors, no download) in a
temporary folder, a private ``QEVAL_CACHE_DIR``. One ``gptq-sim`` run quantizes and fills the
cache (its time is printed, not compared). Then, ``--repeats`` times, interleaved: a ``none``
load and a cached ``gptq-sim`` load, each a full ``QevalLM(...)`` construction in this process
(tokenizer, model, lm-eval's setup); the figure compared is the backend's own ``load_seconds``
(``from_pretrained`` of the checkpoint, resp. SHA-256 verification of every cached file plus
``from_pretrained`` of the cache folder), and the whole construction's wall time is printed too.
Medians of the repeats; the files are in the page cache for both (the first load warms them).

    python benchmarks/quantized_cache_reload.py                 # ~100M parameters, CPU
    python benchmarks/quantized_cache_reload.py --hidden 256 --layers 2 --repeats 3   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def construct(model_dir: Path, spec: dict) -> tuple[float, float, dict]:
    """(backend load_seconds, construction wall s, qeval block) of one QevalLM."""
    from qeval_plugins.backend.lm import QevalLM

    started = time.perf_counter()
    lm = QevalLM(pretrained=str(model_dir), device="cpu", **spec)
    wall = time.perf_counter() - started
    block = lm.get_model_info()["qeval"]
    del lm
    return block["load_seconds"], wall, block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["QEVAL_CACHE_DIR"] = str(Path(scratch) / "cache")
        from qeval_plugins.testing import make_tiny_model

        model_dir = make_tiny_model(
            Path(scratch) / "model",
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_layers=args.layers,
        )
        size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
        gptq = {
            "quantizer": "gptq-sim",
            "calibration_samples": 2,
            "calibration_seqlen": 64,
        }
        construct(model_dir, {"quantizer": "none"})  # warms the page cache
        _, first_wall, block = construct(model_dir, gptq)
        assert block["quantized_cache"]["reused"] is False
        plain, cached, plain_wall, cached_wall = [], [], [], []
        for _ in range(args.repeats):
            seconds, wall, _ = construct(model_dir, {"quantizer": "none"})
            plain.append(seconds)
            plain_wall.append(wall)
            seconds, wall, block = construct(model_dir, gptq)
            assert block["quantized_cache"]["reused"] is True
            cached.append(seconds)
            cached_wall.append(wall)

    print(
        f"checkpoint: {size / 2**20:.0f} MiB float32 safetensors, {args.layers} layers, "
        f"hidden {args.hidden}"
    )
    print(f"gptq-sim first run (quantize + save to the cache): {first_wall:.2f} s wall")
    print(f"{'':28} {'load s':>8} {'construct s':>12}   (medians of {args.repeats})")
    print(
        f"{'none (checkpoint)':28} {statistics.median(plain):8.3f} "
        f"{statistics.median(plain_wall):12.3f}"
    )
    print(
        f"{'gptq-sim (cached)':28} {statistics.median(cached):8.3f} "
        f"{statistics.median(cached_wall):12.3f}"
    )
    ratio = statistics.median(cached) / statistics.median(plain)
    wall_ratio = statistics.median(cached_wall) / statistics.median(plain_wall)
    print(f"cached / checkpoint: load {ratio:.2f}×, construction {wall_ratio:.2f}× (goal ≤ 1.2×)")


if __name__ == "__main__":
    main()
