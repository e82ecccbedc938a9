"""What qeval's ``gptq`` quantizer costs on top of calling GPTQModel directly.

Three measurements on one checkpoint (default: the embedded ``qeval-tiny``) with the same
calibration windows (``build_calibration``: ``--samples`` windows of ``--seqlen`` tokens) and the
same GPTQ settings (int4, group 128, the defaults qeval pins), in one process, interleaved
``--repeats`` times after one warm-up round (imports, kernel selection):

* ``gptqmodel``   — ``GPTQModel.load(checkpoint, QuantizeConfig) + .quantize(windows)``: GPTQModel's
  own call. Its result is not ready to evaluate: the fresh layers hold "v1" zero points that
  its kernels read as "v2" (see ``qeval_plugins/quantizers/gptq.py``);
* ``gptqmodel+reload`` — the same plus ``.save(folder)`` and ``GPTQModel.load(folder)``: what a
  GPTQModel user does to get a model that computes correctly, and what qeval does;
* ``qeval``       — ``GptqQuantizer().quantize(model, options, context)``: qeval's whole path
  (it includes save and reload, releasing the unquantized model, restoring the generation
  config). Loading the unquantized model it is handed is not timed (the backend does that).

GPTQModel's console output is sent to a file in every mode (qeval does that itself), so printing
costs the same. Units: wall seconds (``time.perf_counter``), best and median over the repeats;
ratio = qeval / baseline on the medians. Target: qeval ≤ 1.05 × ``gptqmodel+reload``.

    python benchmarks/gptq_overhead.py                    # qeval-tiny, 16 × 128 tokens, 5 repeats
    python benchmarks/gptq_overhead.py --model PATH --samples 128 --seqlen 512 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "qeval_plugins" / "embedded" / "qeval-tiny"
PASSAGES = ROOT / "tasks" / "qeval_sqnr" / "passages.jsonl"


def calibration_file(folder: Path) -> str:
    """qeval's bundled passages when this checkout has them, else 30 ``qeval_sqnr`` passages."""
    from qeval_plugins.core.calibration import BUNDLED_PATH, BUNDLED_SOURCE

    if BUNDLED_PATH.is_file():
        return BUNDLED_SOURCE
    lines = PASSAGES.read_text().splitlines()[:30]
    target = folder / "calibration.jsonl"
    target.write_text(
        "".join(json.dumps({"text": json.loads(line)["text"]}) + "\n" for line in lines)
    )
    return str(target)


@contextlib.contextmanager
def quiet(log_path: Path):
    with (
        open(log_path, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        yield


def time_gptqmodel(args, context, folder: Path, reload: bool) -> float:
    """GPTQModel's own load + quantize (+ save + load), settings as qeval pins them."""
    import torch
    from gptqmodel import GPTQModel

    from qeval_plugins.quantizers import gptq

    options = gptq_options(args, context)
    config = gptq._quantize_config(sys.modules["gptqmodel"], options)
    started = time.perf_counter()
    with quiet(folder / "gptqmodel.log"):
        model = GPTQModel.load(args.model, config, device="cpu", dtype=torch.float32)
        model.quantize(
            gptq.calibration_batches(context.calibration.input_ids),
            batch_size=1,
            calibration_sort=None,
            calibration_data_min_length=0,
        )
        if reload:
            model.save(str(folder / "model"))
            model = GPTQModel.load(str(folder / "model"), device="cpu", dtype=torch.float32)
    return time.perf_counter() - started


def time_qeval(args, context) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    from qeval_plugins.quantizers.gptq import GptqQuantizer

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    options = gptq_options(args, context)
    started = time.perf_counter()
    GptqQuantizer().quantize(model, options, context)
    return time.perf_counter() - started


def gptq_options(args, context) -> dict:
    from qeval_plugins.core.options import resolve_options
    from qeval_plugins.quantizers.gptq import GptqQuantizer

    quantizer = GptqQuantizer()
    given = {
        "calibration_file": args.calibration_file,
        "calibration_samples": args.samples,
        "calibration_seqlen": args.seqlen,
    }
    return quantizer.finalize_options(resolve_options("gptq", quantizer.options, given))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from qeval_plugins import LoadContext
    from qeval_plugins.core.calibration import build_calibration

    torch.manual_seed(0)
    scratch = Path(tempfile.mkdtemp(prefix="gptq-bench-"))
    os.chdir(scratch)  # GPTQModel called directly writes ./logs
    args.calibration_file = calibration_file(scratch)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    windows = build_calibration(
        tokenizer,
        {
            "calibration_file": args.calibration_file,
            "calibration_samples": args.samples,
            "calibration_seqlen": args.seqlen,
            "calibration_seed": 0,
        },
    )
    context = LoadContext(
        device="cpu",
        dtype="float32",
        checkpoint=args.model,
        tokenizer=tokenizer,
        calibration=windows,
        cache_dir=str(scratch / "cache"),
    )
    modes = {
        "gptqmodel": lambda i: time_gptqmodel(args, context, scratch / f"a{i}", reload=False),
        "gptqmodel+reload": lambda i: time_gptqmodel(args, context, scratch / f"b{i}", True),
        "qeval": lambda i: time_qeval(args, context),
    }
    times = {name: [] for name in modes}
    for round_ in range(args.repeats + 1):  # round 0 warms up and is not counted
        for name, run in modes.items():
            (scratch / f"a{round_}").mkdir(exist_ok=True)
            (scratch / f"b{round_}").mkdir(exist_ok=True)
            seconds = run(round_)
            if round_:
                times[name].append(seconds)
    print(
        f"{Path(args.model).name}: {args.samples} windows × {args.seqlen} tokens, "
        f"int4 g128, CPU float32, {args.repeats} repeats, torch {torch.__version__}"
    )
    print(f"{'mode':<18}{'best s':>8}{'median s':>10}{'qeval ×':>9}")
    qeval_median = statistics.median(times["qeval"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18}{min(values):>8.2f}{median:>10.2f}{qeval_median / median:>9.2f}")


if __name__ == "__main__":
    main()
