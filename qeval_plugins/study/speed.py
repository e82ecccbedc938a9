"""Generation speed per quantizer: new tokens per second of greedy generation.

Each quantizer's model is loaded through qeval's own loading path (the lm-eval backend
:class:`~qeval_plugins.backend.lm.QevalLM`, so a quantized model comes from qeval's cache when a
sweep made it), then one prompt is continued greedily by exactly :data:`NEW_TOKENS` tokens
(``min_new_tokens`` = ``max_new_tokens``, no early stop), :data:`REPEATS` times after one warm-up;
tokens/s = NEW_TOKENS / median wall time. Batch size 1, one process, on the study's device: on a
CPU these are CPU figures (bitsandbytes' and GPTQ's CPU kernels, not their GPU ones).

``speed.json`` (written atomically) holds one row per setting with the times it was computed
from; the report quotes its numbers from that file.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from qeval_plugins.core.specs import parse_spec
from qeval_plugins.storage.atomic import write_atomic

NEW_TOKENS = 64
REPEATS = 3
PROMPT = "It was Mira's birthday in May. Tomas knew that Mira's favourite colour is"
#: (label, quantizer spec, dtype): the unquantized model in float32 and bfloat16, then each
#: quantizer on the float32 checkpoint
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("none float32", "none", "float32"),
    ("none bfloat16", "none", "bfloat16"),
    ("bnb-int8", "bnb-int8", "float32"),
    ("bnb-nf4", "bnb-nf4", "float32"),
    ("bnb-fp4", "bnb-fp4", "float32"),
    ("rtn int4 g32 (simulated)", "rtn:bits=4:group_size=32", "float32"),
    ("gptq int4 g32", "gptq:bits=4:group_size=32", "float32"),
)


def time_generation(model, tokenizer, device: str) -> list[float]:
    """Wall seconds of :data:`REPEATS` greedy generations of exactly :data:`NEW_TOKENS`
    tokens (after one untimed warm-up)."""
    import torch

    inputs = tokenizer(PROMPT, return_tensors="pt").to(device)
    kwargs = dict(
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    times = []
    with torch.inference_mode():
        for repeat in range(REPEATS + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            model.generate(**inputs, **kwargs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if repeat:
                times.append(time.perf_counter() - started)
    return times


def measure_one(path: str, spec: str, dtype: str, device: str) -> dict:
    """One row of ``speed.json``: load ``spec`` on ``path`` through qeval and time it."""
    from qeval_plugins.backend.lm import QevalLM

    name, options = parse_spec(spec)
    lm = QevalLM(pretrained=path, quantizer=name, device=device, dtype=dtype, **options)
    try:
        times = time_generation(lm.model, lm.tokenizer, str(lm.device))
    finally:
        del lm
        gc.collect()
    median = statistics.median(times)
    return {"seconds": times, "median_seconds": median, "tokens_per_second": NEW_TOKENS / median}


def measure_speeds(
    path: str, model_name: str, out: Path, device: str, progress: Callable[[str], None]
) -> dict:
    """Every :data:`SETTINGS` row on the model at ``path``; a setting that fails is a row with
    its error (one line) instead of figures. Rows already in ``out`` for the same model and
    device are kept (a rerun of the study does not time them again)."""
    previous = json.loads(out.read_text()) if out.is_file() else {}
    same = previous.get("model") == model_name and previous.get("device") == device
    rows = {row["label"]: row for row in previous.get("rows", [])} if same else {}
    load_before = os.getloadavg()[0]
    for label, spec, dtype in SETTINGS:
        if label in rows and "tokens_per_second" in rows[label]:
            continue
        progress(f"speed: {label} on {model_name} ({device})")
        row = {"label": label, "spec": spec, "dtype": dtype}
        try:
            row |= measure_one(path, spec, dtype, device)
        except Exception as error:  # one quantizer failing must not stop the rest
            first = (str(error).strip().splitlines() or [""])[0]
            row["error"] = f"{type(error).__name__}: {first[:200]}"
        rows[label] = row
    record = {
        "model": model_name,
        "device": device,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "new_tokens": NEW_TOKENS,
        "repeats": REPEATS,
        "batch_size": 1,
        # other work on the machine slows every row: the 1-minute load average around the timing
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "rows": [rows[label] for label, _, _ in SETTINGS if label in rows],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(record, indent=1) + "\n").encode())
    return record
