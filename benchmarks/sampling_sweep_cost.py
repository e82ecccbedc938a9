"""Cost of a whole sampling sweep versus its settings run one by one (side by side, one process).

For one quantizer on the embedded ``qeval-tiny`` (or ``--model``), times ``simple_evaluate`` of
the ``qeval_<sweep>`` group (every setting plus the summary task) and of each setting's task
alone, each with a fresh reference cache so every measurement includes the unquantized
reference's generations. Target (issue 5): group time ≤ 1.05 × Σ single-setting times. The summary
task's requests equal the settings' requests, so in the group run they are generated once.

    python benchmarks/sampling_sweep_cost.py --sweep temperature --quantizer rtn:bits=4 --limit 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def evaluate(model: str, spec: str, tasks: list[str], limit: int, device: str) -> float:
    """Wall seconds of one simple_evaluate with a cold reference cache."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qeval_plugins.core.specs import spec_model_args
    from qeval_plugins.paths import tasks_path

    with tempfile.TemporaryDirectory() as cache:
        os.environ["QEVAL_CACHE_DIR"] = cache
        manager = TaskManager(include_path=str(tasks_path()), include_defaults=False)
        started = time.perf_counter()
        lm_eval.simple_evaluate(
            model="qeval",
            model_args=f"pretrained={model},{spec_model_args(spec)}",
            tasks=tasks,
            device=device,
            limit=limit,
            task_manager=manager,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep", choices=("temperature", "top_k", "max_new_tokens"), default="temperature"
    )
    parser.add_argument("--quantizer", default="rtn:bits=4")
    parser.add_argument("--model", default="qeval-tiny")
    parser.add_argument("--limit", type=int, default=8, help="prompts per setting")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    from lm_eval.tasks import TaskManager

    from qeval_plugins.paths import tasks_path

    group = f"qeval_{args.sweep}"
    manager = TaskManager(include_path=str(tasks_path()), include_defaults=False)
    settings = [
        name
        for name in manager.all_subtasks
        if name.startswith(f"{group}_") and not name.endswith("_summary")
    ]
    evaluate(args.model, args.quantizer, [settings[0]], 1, args.device)  # warm-up: imports, caches
    single = {
        name: evaluate(args.model, args.quantizer, [name], args.limit, args.device)
        for name in settings
    }
    whole = evaluate(args.model, args.quantizer, [group], args.limit, args.device)
    total = sum(single.values())
    print(
        f"\n{group} on {args.model}, quantizer {args.quantizer}, {args.limit} prompts × 4 "
        f"samples per setting, device {args.device}"
    )
    for name, seconds in single.items():
        print(f"  {name:<32} {seconds:8.2f} s")
    print(f"  {'sum of settings one by one':<32} {total:8.2f} s")
    print(f"  {group + ' (group + summary)':<32} {whole:8.2f} s")
    ratio = whole / total
    verdict = "PASS" if ratio <= 1.05 else "FAIL"
    print(f"  ratio group / sum = {ratio:.3f}  (target <= 1.05: {verdict})")


if __name__ == "__main__":
    main()
