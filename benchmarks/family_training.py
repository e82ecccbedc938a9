"""What training the study's model family costs: seconds per member, per step, and in total.

Trains :func:`qeval_plugins.study.family.default_family` (18 members) into a temporary folder,
or into ``--root`` (members already trained there are reused and show no time), with
``--steps`` steps per member (default: the trainer's). Prints each member's training seconds (as
its last checkpoint records them: the corpus, built once per seed, is not in them) and seconds
per step, the mean seconds per step of each size under the base recipe, and the total.

    python benchmarks/family_training.py                     # the whole default family
    python benchmarks/family_training.py --steps 20          # a quick look at per-step costs
    python benchmarks/family_training.py --root ~/.cache/qeval/family
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from qeval_plugins.study.family import default_family
from qeval_plugins.study.training import DEFAULT_STEPS, train_family


def member_seconds(folder: Path) -> float:
    """Training seconds of a member, as its last checkpoint records them (corpus excluded)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config["qeval_family"]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="family folder (default: a temp)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    members = default_family()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        start = time.perf_counter()
        folders = train_family(members, root=root, steps=args.steps, device=args.device)
        total = time.perf_counter() - start
        seconds = {name: member_seconds(by_fraction[1.0]) for name, by_fraction in folders.items()}

    print(f"\ndefault family, {args.steps} steps per member, {args.device}, root {root}")
    print(f"{'member':24} {'seconds':>8} {'s/step':>8}")
    for name, value in seconds.items():
        print(f"{name:24} {value:8.1f} {value / args.steps:8.3f}")
    print(f"\n{'size (base)':24} {'s/step':>8}")
    for size in ("xs", "s", "m", "l"):
        per_step = [v / args.steps for n, v in seconds.items() if n.startswith(f"base-{size}-")]
        print(f"{size:24} {sum(per_step) / len(per_step):8.3f}")
    print(f"\ntotal {total:.1f}s ({total / 60:.1f} min) for {len(seconds)} members")


if __name__ == "__main__":
    main()
