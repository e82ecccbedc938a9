"""How long ``qeval report`` takes on 1,000 results files, and on one model with 8,000 tasks:
reading + comparing + rendering.

    python benchmarks/report_speed.py [--files 1000] [--models 50] [--tasks 8000] [--repeat 3]

Writes synthetic lm-eval results files (``--models`` models × quantizer specs; four lm-eval
tasks of two metrics each plus ``qeval_sqnr`` with a 224-layer ``config.qeval.sqnr`` block, the
shape of a 7B Llama, and lm-eval's usual ``configs`` / environment text, about 20 kB a file) into
a temporary folder, then times :func:`load_runs`, :func:`compare` and :func:`render` (to a rich
Console writing into memory, width 160). Prints each phase's wall and CPU seconds (CPU time is
the figure to trust on a busy machine) and the total; the best of ``--repeat`` runs counts, so
the figure is warm-cache (the OS holds the files in memory).

Then the wide case: two runs (none, rtn:bits=4) of one model, each with ``--tasks`` lm-eval tasks
of one metric (``acc`` ± stderr), rendered at 160 and at 80 columns: the table is split into
blocks of columns, so the time grows linearly with tasks × runs (the earlier layout shrank the
widest column one cell at a time: quadratic, ~19 s for 8,000 tasks).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

TASKS = {
    "hellaswag": ("acc_norm", True),
    "arc_easy": ("acc", True),
    "qeval_demo_cloze": ("exact_match", True),
    "wikitext": ("word_perplexity", False),
}
LAYERS = [
    f"model.layers.{block}.{part}"
    for block in range(32)
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]
ENV_TEXT = "PyTorch version: 2.13.0\nCUDA used to build PyTorch: 13.0\n" * 40


def results_file(model: str, spec: str, rng: random.Random, index: int) -> dict:
    """One lm-eval-shaped results dict of ``model`` quantized with ``spec``."""
    name, *options = spec.split(":")
    quality = 0.0 if name == "none" else rng.uniform(0.0, 0.08)
    results, directions = {}, {}
    for task, (metric, higher) in TASKS.items():
        value = 0.6 * (1 - quality) if higher else 12.0 * (1 + quality)
        results[task] = {
            "alias": task,
            f"{metric},none": value,
            f"{metric}_stderr,none": 0.012 if higher else "N/A",
            "bits_per_byte,none": 0.7 * (1 + quality),
            "bits_per_byte_stderr,none": "N/A",
        }
        directions[task] = {metric: higher, "bits_per_byte": False}
    layers = {layer: "inf" if name == "none" else rng.uniform(14, 24) for layer in LAYERS}
    finite = [value for value in layers.values() if value != "inf"]
    sqnr = {
        "logit_sqnr_db": "inf" if name == "none" else rng.uniform(8, 25),
        "kl_mean": quality / 4,
        "top1_agreement": 1 - quality,
        "weight_sqnr_mean_db": sum(finite) / len(finite) if finite else "inf",
    }
    results["qeval_sqnr"] = {"alias": "qeval_sqnr"}
    for metric, value in sqnr.items():
        results["qeval_sqnr"] |= {f"{metric},none": value, f"{metric}_stderr,none": "N/A"}
    directions["qeval_sqnr"] = {metric: metric != "kl_mean" for metric in sqnr}
    block = {
        "spec": spec,
        "quantizer": name,
        "options": dict(option.split("=") for option in options),
        "simulated": name == "rtn",
        "effective_bits": 4.25 if name == "rtn" else None,
        "quantize_seconds": rng.uniform(0.3, 60),
        "param_bytes_after": int(13.5e9 * (1 - quality * 5)),
        "param_count": 6_738_415_616,
        "bits_per_param": 16 * (1 - quality * 5),
        "peak_memory": {"bytes": int(14e9), "kind": "cuda_max_allocated"},
        "throughput": {"loglikelihood": {"tokens": 10**6, "seconds": 40.0, "tokens_per_s": 25e3}},
        "sqnr": {
            "weights": {"layers": layers, "mean_db": sqnr["weight_sqnr_mean_db"]},
            "activation_blocks_db": [rng.uniform(10, 30) for _ in range(32)],
            "settings": {"worst_layers": 5},
        },
    }
    return {
        "results": results,
        "group_subtasks": {task: [] for task in results},
        "configs": {
            task: {"task": task, "dataset_path": task, "num_fewshot": 0} for task in results
        },
        "higher_is_better": directions,
        "n-samples": {task: {"original": 1000, "effective": 1000} for task in results},
        "config": {
            "model": "qeval",
            "model_args": {"pretrained": model, "quantizer": name},
            "model_dtype": "torch.bfloat16",
            "qeval": block,
        },
        "date": 1.79e9 + index,
        "pretty_env_info": ENV_TEXT,
        "model_name": model,
    }


def write_files(folder: Path, files: int, models: int) -> None:
    """``files`` results files spread evenly over ``models`` models, one sub-folder each."""
    rng = random.Random(0)
    per_model = max(1, files // models)
    for index in range(files):
        model = f"org/model-{index // per_model:03d}"
        spec = "none" if index % per_model == 0 else f"rtn:bits={2 + index % per_model}"
        path = folder / model.replace("/", "__") / spec.replace(":", "_") / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results_file(model, spec, rng, index), indent=2))


def write_wide(folder: Path, tasks: int) -> None:
    """Two results files (none, rtn:bits=4) of one model with ``tasks`` tasks each."""
    for spec, value in (("none", 0.6), ("rtn:bits=4", 0.58)):
        results = {
            f"task_{index:05d}": {
                "alias": f"task_{index:05d}",
                "acc,none": value,
                "acc_stderr,none": 0.012,
            }
            for index in range(tasks)
        }
        data = {
            "results": results,
            "n-shot": dict.fromkeys(results, 0),
            "config": {
                "model": "qeval",
                "model_args": {"pretrained": "org/wide", "quantizer": spec.split(":")[0]},
                "limit": None,
                "qeval": {"spec": spec, "quantizer": spec.split(":")[0]},
            },
        }
        path = folder / spec.replace(":", "_") / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))


def measure(folder: Path, width: int = 160) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of each phase of one report of everything in ``folder``."""
    from rich.console import Console

    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.load import load_runs
    from qeval_plugins.report.render import render

    times = {}
    clocks = (time.perf_counter(), time.process_time())
    runs, warnings = load_runs([folder])
    times["load"], clocks = _since(clocks)
    report = compare(runs, warnings=warnings)
    times["compare"], clocks = _since(clocks)
    render(report, Console(file=io.StringIO(), width=width, color_system="truecolor"))
    times["render"], clocks = _since(clocks)
    times["total"] = tuple(sum(phase[i] for phase in times.values()) for i in range(2))
    if len(runs) == 0 or warnings:
        raise SystemExit(f"unexpected: {len(runs)} runs, warnings {warnings[:3]}")
    return times


def _since(clocks: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    now = (time.perf_counter(), time.process_time())
    return (now[0] - clocks[0], now[1] - clocks[1]), now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=8000, help="tasks per run, wide case")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_files(folder, args.files, args.models)
        size = sum(path.stat().st_size for path in folder.rglob("*.json"))
        best = min((measure(folder) for _ in range(args.repeat)), key=lambda t: t["total"][0])
    show(f"{args.files} results files ({size / 2**20:.1f} MiB), {args.models} models", best)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_wide(folder, args.tasks)
        for width in (160, 80):
            runs = (measure(folder, width) for _ in range(args.repeat))
            best = min(runs, key=lambda t: t["total"][0])
            show(f"1 model, 2 runs x {args.tasks} tasks, {width} columns", best)


def show(title: str, times: dict[str, tuple[float, float]]) -> None:
    """Print one case's phases: wall and CPU seconds."""
    print(title)
    print(f"  {'phase':8s} {'wall s':>7s} {'CPU s':>7s}")
    for phase, (wall, cpu) in times.items():
        print(f"  {phase:8s} {wall:7.3f} {cpu:7.3f}")


if __name__ == "__main__":
    main()
