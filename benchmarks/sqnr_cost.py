"""Cost of the ``qeval_sqnr`` task next to a plain perplexity run over the same texts.

Three measurements of one quantizer (``--quantizer``, spec ``NAME[:option=value...]``), each in a
fresh Python process (``python benchmarks/sqnr_cost.py --child MODE ...``) so that every peak is
its own:

* ``ppl``  — an lm-eval ``loglikelihood_rolling`` task (``sqnr_texts_ppl``, written to a temporary
  include folder at run time) over ``qeval_sqnr``'s own passages, metric ``word_perplexity``:
  what an ordinary perplexity evaluation of the quantized model costs;
* ``cold`` — ``qeval_sqnr`` with an empty reference cache (``$QEVAL_CACHE_DIR`` is a fresh
  temporary folder): the quantized model is loaded, released, the unquantized reference is
  loaded, run and cached, the quantized model is loaded and quantized again and run;
* ``warm`` — ``qeval_sqnr`` again with the same cache: the reference is read from disk.

All three score the same tokens: ``qeval_sqnr`` gets ``max_tokens`` (default 512) larger than the
longest passage, so no passage is cut, and the model's context is longer than every passage, so
the rolling-loglikelihood run scores each passage in one window. Every run uses ``--model qeval``
with the same model_args, batch size 1, ``bootstrap_iters=0`` (the stderr bootstrap does not
depend on the model) and ``log_samples=False``.

The three runs are repeated ``--repeats`` times (default 2), interleaved (ppl, cold, warm, ppl,
...; every cold run gets its own empty cache) so that a slow spell of a shared machine hits every
mode; the table keeps each mode's fastest wall and CPU time and its largest memory figures.

Units and method, per child process:

* wall s — ``time.perf_counter`` around ``lm_eval.simple_evaluate(...)`` (``TaskManager``
  construction included): model load, quantization, requests, metrics; × ppl = ratio to the
  ``ppl`` run;
* CPU s — user + system CPU seconds of the process over the same call (all threads), a cross-check
  of the wall-time ratio that is less sensitive to other processes on the machine;
* baseline RSS — ``VmRSS`` of ``/proc/self/status`` right before that call, after importing torch,
  transformers, datasets, lm-eval and qeval (and bitsandbytes for ``bnb-*``);
* RSS+ — peak RSS growth: ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB, the process's all-time peak)
  after the call minus the baseline, in GiB (2**30 bytes); /model = RSS+ / max(unquantized,
  quantized) bytes;
* anon+ — the same for ``RssAnon`` (memory not backed by a file), sampled every 5 ms by a thread:
  transformers maps a safetensors checkpoint into memory, and the pages of that mapping count in
  RSS although the kernel can drop them, so RSS+ can exceed what the process really allocated;
* on CUDA also ``torch.cuda.max_memory_allocated()`` (GiB);
* where the time went — qeval's and lm-eval's steps are wrapped with timers in the child: build
  (model load + quantization, the reference's load included), requests (lm-eval's
  ``loglikelihood_rolling``), reference / compare / weights (the three passes of ``qeval_sqnr``),
  cache (reference cache read and write); other = the rest of the wall time;
* model sizes — unquantized: ``backend.checkpoints.checkpoint_parameter_bytes`` (bytes of the
  checkpoint's tensors in their stored dtype); quantized: ``config.qeval.param_bytes_after`` of
  the results (state-dict bytes after quantization); cache: size of the ``.pt`` reference file.
  MB = 10**6 bytes.

Targets checked (for ``cold`` and ``warm``): wall time ≤ 2.5 × the ``ppl`` run, and peak memory
(RSS growth on CPU, CUDA max allocated on CUDA) ≤ 1.25 × max(unquantized, quantized) + cache
file bytes; on CPU the anonymous-memory reading is checked against the same bound for reference.

By default the model is a random-init Llama (``--preset medium``: hidden 1024, MLP 2816, 8 layers,
16 heads, vocabulary 32000, float32, 0.67 GB) written to a temporary folder with the byte-level BPE
tokenizer of qeval's embedded ``qeval-tiny`` (2048 tokens, 160-212 per passage; token ids are below
the model's vocabulary size). Random weights make the scores meaningless; time and memory are
those of the shape.

    python benchmarks/sqnr_cost.py                              # rtn:bits=4, medium, 16 passages
    python benchmarks/sqnr_cost.py --quantizer bnb-nf4 --json nf4.json
    python benchmarks/sqnr_cost.py --model PATH --device cuda --limit 40
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRESETS = {
    "small": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "medium": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=32000,
    ),
}
PPL_TASK = "sqnr_texts_ppl"
SQNR_TASK = "qeval_sqnr"
MODES = ("ppl", "cold", "warm")
MARKER = "SQNR_COST_RESULT "
WALL_TARGET = 2.5
MEMORY_TARGET = 1.25
GIB = 2**30

PPL_YAML = f"""\
# Written by benchmarks/sqnr_cost.py: perplexity over the texts of qeval_sqnr.
task: {PPL_TASK}
custom_dataset: !function utils.load_texts
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
metadata:
  version: 1.0
"""
PPL_UTILS = "from qeval_plugins.evals.sqnr.task import load_texts\n\n__all__ = ['load_texts']\n"


# ---------------------------------------------------------------- child: one measurement


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``RssAnon``), None where missing."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class AnonPeak(threading.Thread):
    """Samples ``RssAnon`` (resident memory not backed by a file) every ``interval`` seconds.

    ``ru_maxrss`` counts every resident page, including the pages of a checkpoint that
    transformers keeps memory-mapped; those are clean page cache the kernel can drop, so the
    anonymous part is reported beside it. Sampled: a spike shorter than the interval is missed.
    """

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = proc_status_kib("RssAnon") or 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, proc_status_kib("RssAnon") or 0)
            self.done.wait(self.interval)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, proc_status_kib("RssAnon") or 0)


def time_phases(phases: dict[str, list[float]]) -> None:
    """Wrap qeval's and lm-eval's steps so the child can say where its time went.

    ``build``: a model load (+ quantization), outer calls only, so a quantized build counts once
    and the reference load of a cold run counts once; ``reference``, ``compare``, ``weights``:
    the three passes of ``qeval_sqnr``; ``cache``: reference cache read + write; ``requests``:
    lm-eval's ``loglikelihood_rolling`` (the perplexity run). Missing names are skipped.
    """
    from lm_eval.models.huggingface import HFLM

    from qeval_plugins.backend import lm
    from qeval_plugins.evals.sqnr import engine as sqnr
    from qeval_plugins.storage import reference_cache

    depth = [0]

    def wrap(owner, name: str, phase: str, outer_only: bool = False) -> None:
        function = getattr(owner, name, None)
        if function is None:
            return

        @functools.wraps(function)
        def timed(*args, **kwargs):
            outer = depth[0] == 0
            depth[0] += outer_only
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= outer_only
                if outer or not outer_only:
                    phases.setdefault(phase, []).append(time.perf_counter() - started)

        setattr(owner, name, timed)

    wrap(lm.QevalLM, "_create_model", "build", outer_only=True)
    wrap(HFLM, "_create_model", "build", outer_only=True)
    wrap(HFLM, "loglikelihood_rolling", "requests")
    wrap(sqnr, "compute_reference", "reference")
    wrap(sqnr, "compare", "compare")
    wrap(sqnr, "weight_energies", "weights")
    wrap(reference_cache, "load", "cache")
    wrap(reference_cache, "save", "cache")


def child(args: argparse.Namespace) -> None:
    """Run one simple_evaluate and print one JSON line (prefixed with MARKER) to stdout."""
    # everything a run imports is imported before the baseline is read
    import datasets  # noqa: F401
    import lm_eval
    import lm_eval.models.huggingface
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401
    from lm_eval.tasks import TaskManager

    import qeval_plugins.backend.lm
    import qeval_plugins.evals.sqnr.engine
    import qeval_plugins.evals.sqnr.task  # noqa: F401

    if args.quantizer.startswith("bnb"):
        import bitsandbytes  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    task = PPL_TASK if args.child == "ppl" else SQNR_TASK
    phases: dict[str, list[float]] = {}
    time_phases(phases)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    baseline_kib = proc_status_kib("VmRSS")
    baseline_anon_kib = proc_status_kib("RssAnon")
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sampler = AnonPeak()
    sampler.start()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model="qeval",
        model_args=args.model_args,
        tasks=[task],
        device=args.device,
        batch_size=1,
        limit=args.limit,
        bootstrap_iters=0,
        log_samples=False,
        task_manager=TaskManager(
            include_path=args.include, include_defaults=False, metadata=json.loads(args.metadata)
        ),
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    anon_peak_kib = sampler.stop()
    block = results["config"].get("qeval", {})
    metrics = {
        key.split(",")[0]: value
        for key, value in results["results"][task].items()
        if key.endswith(",none")
    } | block.get("sqnr", {}).get("metrics", {})  # qeval_sqnr: the metrics outside the table
    record = {
        "mode": args.child,
        "task": task,
        "wall_s": wall,
        "cpu_s": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        "baseline_rss_kib": baseline_kib,
        "peak_rss_before_kib": peak_before_kib,
        "peak_rss_kib": after.ru_maxrss,
        "baseline_anon_kib": baseline_anon_kib,
        "peak_anon_kib": anon_peak_kib,
        "cuda_max_allocated": torch.cuda.max_memory_allocated() if cuda else None,
        "param_bytes_before": block.get("param_bytes_before"),
        "param_bytes_after": block.get("param_bytes_after"),
        "quantize_seconds": block.get("quantize_seconds"),
        "reference_reused": block.get("sqnr", {}).get("reference_cache", {}).get("reused"),
        "phases": {name: [len(times), sum(times)] for name, times in phases.items()},
        "metrics": metrics,
    }
    print(MARKER + json.dumps(record, default=str), flush=True)


# ---------------------------------------------------------------- parent: set up, run, report


def build_checkpoint(preset: str, directory: Path) -> Path:
    """Random-init float32 Llama of ``preset``'s shape with qeval-tiny's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODELS["qeval-tiny"])
    tokenizer.model_max_length = 2048
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(
        **PRESETS[preset],
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def token_counts(model_dir: str, limit: int | None) -> list[int]:
    """Tokens of each measured passage (without special tokens), as the backend encodes them."""
    from transformers import AutoTokenizer

    from qeval_plugins.evals.sqnr.task import load_texts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = load_texts()["test"]["text"][:limit]
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def context_length(model_dir: str) -> int | None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return getattr(config, "max_position_embeddings", None)


def run_child(mode: str, args: argparse.Namespace, setup: dict, cache_dir: Path) -> dict:
    """Run ``--child mode`` in a fresh interpreter and return its JSON record."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        mode,
        "--model-args",
        setup["model_args"],
        "--quantizer",
        args.quantizer,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--metadata",
        json.dumps(setup["metadata"]),
    ]
    if args.limit:
        command += ["--limit", str(args.limit)]
    for path in setup["include"][mode]:
        command += ["--include", path]
    env = dict(
        os.environ,
        QEVAL_CACHE_DIR=str(cache_dir),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    print(f"[{mode}] running ...", file=sys.stderr, flush=True)
    process = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if args.verbose:
        sys.stderr.write(process.stderr)
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARKER)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout[-4000:] + process.stderr[-8000:])
        raise SystemExit(f"child '{mode}' failed with exit status {process.returncode}")
    record = json.loads(lines[-1][len(MARKER) :])
    print(f"[{mode}] {record['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return record


def rss_growth(record: dict) -> int:
    """Peak RSS growth over the baseline, bytes."""
    return max(record["peak_rss_kib"] - record["baseline_rss_kib"], 0) * 1024


def anon_growth(record: dict) -> int:
    """Sampled peak anonymous RSS growth over the baseline, bytes."""
    return max(record["peak_anon_kib"] - record["baseline_anon_kib"], 0) * 1024


def summarize(runs: list[dict]) -> dict:
    """One mode over its repeats: fastest wall and CPU time, largest memory figures."""
    fastest = min(runs, key=lambda run: run["wall_s"])
    cuda = [run["cuda_max_allocated"] for run in runs if run["cuda_max_allocated"] is not None]
    return {
        "wall_s": fastest["wall_s"],
        "walls_s": [run["wall_s"] for run in runs],
        "cpu_s": min(run["cpu_s"] for run in runs),
        "rss_growth": max(rss_growth(run) for run in runs),
        "anon_growth": max(anon_growth(run) for run in runs),
        "baseline_rss": max(run["baseline_rss_kib"] for run in runs) * 1024,
        "cuda_max_allocated": max(cuda) if cuda else None,
        "reference_reused": sorted({str(run["reference_reused"]) for run in runs}),
        "phases": fastest["phases"],
        "metrics": fastest["metrics"],
        "param_bytes_before": fastest["param_bytes_before"],
        "param_bytes_after": fastest["param_bytes_after"],
    }


def report(runs: dict, args: argparse.Namespace, setup: dict, cache_bytes: int) -> dict:
    """Print the tables and the targets; return everything as a dict (for ``--json``)."""
    import torch

    cuda = args.device.startswith("cuda")
    rows = {mode: summarize(runs[mode]) for mode in MODES}
    unquantized = setup["unquantized_bytes"] or rows["ppl"]["param_bytes_before"]
    quantized = rows["ppl"]["param_bytes_after"]
    larger = max(unquantized or 0, quantized or 0)
    ppl = rows["ppl"]
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    tokens = setup["tokens"]
    print()
    print(
        f"quantizer {args.quantizer}; model {setup['model_label']}; {device_name}; "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} thread(s)"
    )
    print(
        f"{len(tokens)} passages, {sum(tokens)} tokens scored per run (longest passage "
        f"{max(tokens)} tokens, qeval_sqnr max_tokens {setup['metadata']['max_tokens']}); "
        f"{args.repeats} repeat(s): fastest wall/CPU time, largest memory"
    )
    print(
        f"unquantized {unquantized / 1e6:.1f} MB, quantized {quantized / 1e6:.1f} MB, "
        f"reference cache file {cache_bytes / 1e6:.1f} MB (MB = 10^6 bytes); baseline RSS "
        f"after imports {ppl['baseline_rss'] / GIB:.2f} GiB"
    )
    print()
    header = (
        f"{'mode':<6}{'wall s':>8}{'× ppl':>7}{'CPU s':>8}{'× ppl':>7}{'RSS+ GiB':>10}"
        f"{'/model':>8}{'anon+ GiB':>10}{'/model':>8}"
        + (f"{'CUDA GiB':>10}{'/model':>8}" if cuda else "")
        + f"{'ref reused':>12}"
    )
    print(header)
    print("-" * len(header))
    for mode in MODES:
        row = rows[mode]
        line = (
            f"{mode:<6}{row['wall_s']:>8.1f}{row['wall_s'] / ppl['wall_s']:>7.2f}"
            f"{row['cpu_s']:>8.1f}{row['cpu_s'] / ppl['cpu_s']:>7.2f}"
            f"{row['rss_growth'] / GIB:>10.2f}{row['rss_growth'] / larger:>8.2f}"
            f"{row['anon_growth'] / GIB:>10.2f}{row['anon_growth'] / larger:>8.2f}"
        )
        if cuda:
            line += f"{row['cuda_max_allocated'] / GIB:>10.2f}"
            line += f"{row['cuda_max_allocated'] / larger:>8.2f}"
        reused = "-" if mode == "ppl" else "/".join(row["reference_reused"])
        line += f"{reused:>12}"
        print(line)
    print()
    names = ("build", "requests", "reference", "compare", "weights", "cache")
    header = f"{'mode':<6}" + "".join(f"{name + ' s':>13}" for name in names) + f"{'other s':>9}"
    print("where the time went (fastest repeat; build = model load + quantization, n× = count)")
    print(header)
    print("-" * len(header))
    for mode in MODES:
        phases = rows[mode]["phases"]
        cells = [
            f"{phases[name][0]}× {phases[name][1]:.1f}" if name in phases else "-" for name in names
        ]
        other = rows[mode]["wall_s"] - sum(value[1] for value in phases.values())
        print(f"{mode:<6}" + "".join(f"{cell:>13}" for cell in cells) + f"{other:>9.1f}")
    print()
    memory_key = "cuda_max_allocated" if cuda else "rss_growth"
    memory_name = "CUDA max allocated" if cuda else "peak RSS growth"
    bound = MEMORY_TARGET * larger + cache_bytes
    checks = {}
    for mode in ("cold", "warm"):
        row = rows[mode]
        ratio = row["wall_s"] / ppl["wall_s"]
        checks[mode] = {
            "wall_ratio": ratio,
            "wall_pass": ratio <= WALL_TARGET,
            "memory_bytes": row[memory_key],
            "memory_bound_bytes": bound,
            "memory_pass": row[memory_key] <= bound,
            "anon_pass": row["anon_growth"] <= bound,
        }
        print(
            f"target: wall time of qeval_sqnr ≤ {WALL_TARGET}× the perplexity run [{mode}]: "
            f"{ratio:.2f}× -> {'PASS' if checks[mode]['wall_pass'] else 'FAIL'}"
        )
    for mode in ("cold", "warm"):
        check = checks[mode]
        print(
            f"target: peak memory ≤ {MEMORY_TARGET}× the larger model + cache [{mode}]: "
            f"{memory_name} {check['memory_bytes'] / GIB:.2f} GiB vs {MEMORY_TARGET} × "
            f"{larger / GIB:.2f} + {cache_bytes / GIB:.2f} = {bound / GIB:.2f} GiB -> "
            f"{'PASS' if check['memory_pass'] else 'FAIL'}"
            + (
                ""
                if cuda
                else f" (anonymous only: {rows[mode]['anon_growth'] / GIB:.2f} GiB -> "
                f"{'PASS' if check['anon_pass'] else 'FAIL'})"
            )
        )
    sqnr = rows["warm"]["metrics"]
    print(
        f"\nscores (random weights, meaningless): ppl run word_perplexity "
        f"{ppl['metrics'].get('word_perplexity'):.4g}; qeval_sqnr ppl_quantized "
        f"{sqnr.get('ppl_quantized'):.4g}, logit_sqnr_db {sqnr.get('logit_sqnr_db')}, "
        f"kl_mean {sqnr.get('kl_mean'):.3g}"
    )
    return {
        "quantizer": args.quantizer,
        "model": setup["model_label"],
        "device": device_name,
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "passages": len(tokens),
        "tokens": sum(tokens),
        "repeats": args.repeats,
        "unquantized_bytes": unquantized,
        "quantized_bytes": quantized,
        "cache_bytes": cache_bytes,
        "summary": rows,
        "checks": checks,
        "runs": runs,
    }


def parent(args: argparse.Namespace) -> None:
    """Build or take the model, write the perplexity task, run the children, report."""
    from qeval_plugins.backend.checkpoints import checkpoint_parameter_bytes
    from qeval_plugins.core.plan import check_spec
    from qeval_plugins.core.specs import spec_model_args
    from qeval_plugins.paths import tasks_path

    check_spec(args.quantizer, args.device)  # a bad spec fails here, before any model is built
    scratch = Path(tempfile.mkdtemp(prefix="sqnr_cost_"))
    try:
        if args.model:
            model_dir = args.model
            model_label = args.model
        else:
            print(f"building the '{args.preset}' checkpoint ...", file=sys.stderr, flush=True)
            model_dir = str(build_checkpoint(args.preset, scratch / "model"))
            shape = PRESETS[args.preset]
            model_label = (
                f"random Llama '{args.preset}' (hidden {shape['hidden_size']}, MLP "
                f"{shape['intermediate_size']}, {shape['num_hidden_layers']} layers, vocab "
                f"{shape['vocab_size']}, float32)"
            )
        ppl_dir = scratch / "ppl_task"
        ppl_dir.mkdir()
        (ppl_dir / f"{PPL_TASK}.yaml").write_text(PPL_YAML)
        (ppl_dir / "utils.py").write_text(PPL_UTILS)
        tokens = token_counts(model_dir, args.limit)
        context = context_length(model_dir)
        if max(tokens) > args.max_tokens:
            print(
                f"warning: a passage has {max(tokens)} tokens > max_tokens {args.max_tokens}: "
                f"qeval_sqnr scores fewer tokens than the perplexity run",
                file=sys.stderr,
            )
        if context and max(tokens) + 1 > context:
            print(
                f"warning: a passage has {max(tokens)} tokens, the context is {context}: the "
                f"perplexity run scores it in several windows",
                file=sys.stderr,
            )
        model_args = f"pretrained={model_dir},{spec_model_args(args.quantizer)}"
        if args.extra_model_args:
            model_args += "," + args.extra_model_args
        setup = {
            "model_args": model_args,
            "metadata": {"max_tokens": args.max_tokens},
            "include": {
                "ppl": [str(ppl_dir)],
                "cold": [str(tasks_path())],
                "warm": [str(tasks_path())],
            },
            "tokens": tokens,
            "unquantized_bytes": checkpoint_parameter_bytes(model_dir),
            "model_label": model_label,
        }
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        cache_bytes = 0
        for repeat in range(args.repeats):  # interleaved, so a slow spell hits every mode
            sqnr_cache = scratch / f"cache_{repeat}"  # empty for cold, filled by cold for warm
            runs["ppl"].append(run_child("ppl", args, setup, scratch / "cache_unused"))
            runs["cold"].append(run_child("cold", args, setup, sqnr_cache))
            runs["warm"].append(run_child("warm", args, setup, sqnr_cache))
            cache_files = list((sqnr_cache / "reference").glob("*.pt"))
            cache_bytes = sum(path.stat().st_size for path in cache_files)
            shutil.rmtree(sqnr_cache, ignore_errors=True)
        summary = report(runs, args, setup, cache_bytes)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizer", default="rtn:bits=4", help="spec NAME[:option=value...]")
    parser.add_argument("--model", help="existing checkpoint (default: build --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--limit", type=int, default=16, help="passages (0 = all 40)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of ppl, cold, warm (fastest time is kept)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="qeval_sqnr max_tokens (no passage cut)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per child (0: torch's default)"
    )
    parser.add_argument("--extra-model-args", default="", help="appended to model_args")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--verbose", action="store_true", help="show the children's logs")
    # internal: one measurement in a fresh process
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--model-args", help=argparse.SUPPRESS)
    parser.add_argument("--metadata", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--include", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.limit = args.limit or None
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
