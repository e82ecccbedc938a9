"""Every library quantizer loads and evaluates ``qeval_demo_facts`` through lm-eval on the CPU."""

from __future__ import annotations

import importlib.util
import math

import pytest
from conftest import evaluate

SMALL = "calibration_samples=4,calibration_seqlen=64"
SPECS = [
    ("torchao-int8", "torchao", ""),
    ("torchao-int4", "torchao", ""),
    ("torchao-w8a8", "torchao", ""),
    ("hqq", "hqq", ""),
    ("quanto-int4", "optimum.quanto", ""),
    ("quanto-int8", "optimum.quanto", f"activations=int8,{SMALL}"),
    ("autoround", "auto_round", f"iters=2,{SMALL}"),
]


def installed(module: str) -> bool:
    top = module.split(".")[0]
    return (
        importlib.util.find_spec(top) is not None and importlib.util.find_spec(module) is not None
    )


@pytest.mark.slow
@pytest.mark.parametrize(("quantizer", "module", "options"), SPECS, ids=[s[0] for s in SPECS])
def test_it_evaluates_the_demo_task(quantizer, module, options, tasks_dir):
    if not installed(module):
        pytest.skip(f"{quantizer} needs {module}: pip install 'qeval[...]' ('qeval quantizers')")
    model_args = ",".join(filter(None, [f"pretrained=qeval-tiny,quantizer={quantizer}", options]))
    results = evaluate(model_args, ["qeval_demo_facts"], tasks_dir, limit=8)
    accuracy = results["results"]["qeval_demo_facts"]["acc,none"]
    block = results["config"]["qeval"]
    assert math.isfinite(accuracy) and 0 <= accuracy <= 1
    assert block["quantizer"] == quantizer and block["scheme"]["weights"]
    if not block["simulated"]:  # autoround keeps its rounded weights dense
        assert 0 < block["param_bytes_after"] < block["param_bytes_before"]
