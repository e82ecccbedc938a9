"""The README's plugin tutorial is code that works: its calibrated-method example runs against the
LoadContext it documents (calibration windows, progress, record, logger), and the section names
every channel a plugin gets."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def plugin_section() -> str:
    text = README.read_text()
    start = text.index("## Writing a quantizer plugin")
    return text[start : text.index("\n## ", start + 1)]


def test_the_calibrated_example_runs_against_the_context_it_documents(tiny_model_dir, caplog):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qeval_plugins.core.calibration import build_calibration
    from qeval_plugins.core.options import resolve_options
    from qeval_plugins.core.quantizer import LoadContext

    blocks = re.findall(r"```python\n(.*?)```", plugin_section(), re.S)
    [example] = [block for block in blocks if "class MyGptq" in block]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    quantizer = namespace["MyGptq"]()
    options = resolve_options(
        quantizer.name,
        quantizer.options,
        {"calibration_samples": 2, "calibration_seqlen": 16},
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    context = LoadContext(
        tokenizer=tokenizer, calibration=build_calibration(tokenizer, options), plugin="mine"
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with caplog.at_level(logging.INFO, logger="qeval.plugin"):
        assert quantizer.quantize(model, options, context) is model
    assert context.records.values == {"loss.0": 0.0, "loss.1": 0.0}  # the tiny model: 2 blocks
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "calibrating: started (2 steps)"
    assert messages[1].startswith("calibrating: done, 2/2 in ")
    assert messages[2] == "calibrated 2 blocks"


@pytest.mark.parametrize(
    "phrase",
    [
        "context.load_kwargs",
        "context.record(key, value)",
        "qeval.plugin_record",
        "qeval.plugin_record_dropped",
        "64 KiB",
        "context.logger",
        "context.progress(",
        "`effective_bits`",
        "may declare other *defaults*",
        "joined by `+`",
    ],
)
def test_the_plugin_section_documents_each_channel(phrase):
    assert phrase in plugin_section()
