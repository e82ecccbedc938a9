"""What LoadContext gives a plugin besides the model: lm-eval's load arguments, a record that
lands in the results (and survives the quantized-model cache), a logger and a progress handle;
and the one rule on calibration options (only their defaults may change)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import fake_plugins

from qeval_plugins import QevalError
from qeval_plugins.core.quantizer import RECORD_CAP_BYTES, LoadContext

CALIBRATING = """
import torch
from qeval_plugins import CALIBRATION_OPTIONS, Option, Quantizer, hookimpl

SEEN = []

class Calibrating(Quantizer):
    '''AWQ-style: picks a scale exponent α per layer on the calibration windows (here, a fixed
    rule), records α, the loss and the iterations, and reports progress per layer.'''
    name = "calibrating"
    description = "records what it found (test plugin)"
    options = (Option("grid", int, 4, "α grid points", minimum=1), *CALIBRATION_OPTIONS)
    calibrated = True
    cache_quantized = True

    def quantize(self, model, options, context):
        import numpy as np

        SEEN.append(("quantize", context))
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][:4]
        alphas = {}
        with context.progress("calibrating", total=len(linears)) as advance:
            for index, name in enumerate(linears):
                alphas[name] = np.float32(0.25 * (index % options["grid"]))
                advance(1)
        context.logger.info("chose %d scales", len(alphas))
        context.record("alpha", alphas)
        context.record("loss", torch.tensor(0.125))
        context.record("iterations", np.int64(options["grid"]))
        return model

    def load_quantized(self, folder, options, context):
        SEEN.append(("load_quantized", context))
        return None  # qeval loads the folder save_pretrained wrote

class Hoarder(Quantizer):
    name = "hoarder"
    description = "records more than the cap (test plugin)"
    def quantize(self, model, options, context):
        context.record("first", "x" * 1000)
        context.record("huge", "y" * 70_000)
        context.record("later", "z" * 65_000)
        context.record("small", 1)
        return model

class Recorder(Quantizer):
    name = "bad-record"
    description = "records an object that is not JSON (test plugin)"
    def quantize(self, model, options, context):
        context.record("model", model)
        return model

@hookimpl
def qeval_register_quantizers(register):
    register(Calibrating())
    register(Hoarder())
    register(Recorder())
"""

SMALL = {"calibration_samples": 2, "calibration_seqlen": 16}


@pytest.fixture
def calibrating(monkeypatch, tmp_path, fresh_registry):
    """The test plugin loaded, with a private quantized-model cache; its module's SEEN list."""
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    fake_plugins(monkeypatch, tmp_path, {"awqish": CALIBRATING})
    from qeval_plugins.core.registry import get_registry

    assert get_registry().plugins["awqish"].problems == []
    module = sys.modules["fakeplugin_awqish"]
    module.SEEN.clear()
    return module.SEEN


def load(model_dir, quantizer: str, **model_args):
    """The lm-eval backend, as ``lm_eval --model qeval`` builds it."""
    from qeval_plugins.backend.lm import QevalLM

    return QevalLM(pretrained=str(model_dir), quantizer=quantizer, device="cpu", **model_args)


def test_quantize_and_load_quantized_get_lm_evals_load_arguments(calibrating, tiny_model_dir):
    load(tiny_model_dir, "calibrating", dtype="float32", attn_implementation="eager", **SMALL)
    load(tiny_model_dir, "calibrating", dtype="float32", attn_implementation="eager", **SMALL)
    assert [step for step, _ in calibrating] == ["quantize", "load_quantized"]
    for _, context in calibrating:
        given = context.load_kwargs
        assert given["dtype"] == "float32" and given["attn_implementation"] == "eager"
        assert given["trust_remote_code"] is False and given["parallelize"] is False
        assert "revision" in given and "max_memory_per_gpu" in given
        with pytest.raises(TypeError):
            given["dtype"] = "bfloat16"  # read-only: what the run loads with
        assert context.plugin == "awqish"


def test_the_record_lands_in_the_results_and_survives_the_cache(
    calibrating, tiny_model_dir, caplog
):
    expected = {
        "alpha": {
            "model.layers.0.self_attn.q_proj": 0.0,
            "model.layers.0.self_attn.k_proj": 0.25,
            "model.layers.0.self_attn.v_proj": 0.5,
            "model.layers.0.self_attn.o_proj": 0.75,
        },
        "loss": 0.125,
        "iterations": 4,
    }
    with caplog.at_level(logging.INFO, logger="qeval.plugin"):
        first = load(tiny_model_dir, "calibrating", **SMALL).get_model_info()["qeval"]
    assert first["plugin_record"] == expected and "plugin_record_dropped" not in first
    assert first["quantized_cache"]["reused"] is False
    json.dumps(first, allow_nan=False)
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("qeval.plugin")]
    assert lines[0] == ("qeval.plugin.awqish", "calibrating: started (4 steps)")
    assert lines[1][1].startswith("calibrating: done, 4/4 in ")
    assert lines[2] == ("qeval.plugin.awqish", "chose 4 scales")
    # a later run reuses the cached model: quantize does not run, the record is still reported
    again = load(tiny_model_dir, "calibrating", **SMALL).get_model_info()["qeval"]
    assert [step for step, _ in calibrating] == ["quantize", "load_quantized"]
    assert again["quantized_cache"]["reused"] is True
    assert again["plugin_record"] == expected


def test_a_quantizer_that_records_nothing_adds_no_record(calibrating, tiny_model_dir):
    block = load(tiny_model_dir, "none").get_model_info()["qeval"]
    assert "plugin_record" not in block and "plugin_record_dropped" not in block


def test_a_record_past_the_cap_is_dropped_with_one_warning(calibrating, tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="qeval"):
        block = load(tiny_model_dir, "hoarder").get_model_info()["qeval"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "plugin 'awqish': context.record('huge', ...)" in warnings[0]
    assert block["plugin_record"] == {"first": "x" * 1000, "small": 1}
    assert block["plugin_record_dropped"] == ["huge", "later"]  # 1 000 + 65 000 bytes > 64 KiB


def test_a_value_that_is_not_json_is_one_line_naming_the_plugin(calibrating, tiny_model_dir):
    with pytest.raises(QevalError) as caught:
        load(tiny_model_dir, "bad-record")
    message = str(caught.value)
    assert message.startswith("plugin 'awqish': context.record('model', ...): a LlamaForCausalLM")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
        (np.bool_(True), True),
        (np.array(2.5), 2.5),
        (torch.tensor(3), 3),
        (torch.tensor(0.25, dtype=torch.bfloat16), 0.25),
        ((1, [2.0, None], {"a": "b"}), [1, [2.0, None], {"a": "b"}]),
    ],
)
def test_numpy_and_torch_scalars_are_recorded_as_json_numbers(value, stored):
    context = LoadContext(plugin="p")
    context.record("key", value)
    assert context.records.values == {"key": stored}
    assert type(context.records.values["key"]) is type(stored)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (float("nan"), r"nan is not valid JSON"),
        ([float("inf")], r"inf is not valid JSON"),
        (np.zeros(3), r"got a ndarray of shape \(3,\); record value.tolist\(\)"),
        (torch.ones(2, 2), r"got a Tensor of shape \(2, 2\)"),
        ({1: 2}, r"dict keys must be strings, got 1"),
        ({"a", "b"}, r"a set is not JSON"),
    ],
)
def test_values_that_are_not_json_are_refused(value, rule):
    context = LoadContext(plugin="p")
    with pytest.raises(QevalError, match=rf"^plugin 'p': context.record\('key', ...\): {rule}"):
        context.record("key", value)
    assert context.records.values == {}


def test_a_cyclic_value_is_refused_not_a_crash():
    looped: list = []
    looped.append(looped)
    with pytest.raises(QevalError, match=r"nests deeper than 32 levels"):
        LoadContext(plugin="p").record("loop", looped)


def test_the_cap_counts_the_record_as_compact_json():
    context = LoadContext(plugin="p")
    context.record("a", "x" * 100)
    filler = RECORD_CAP_BYTES - context.records.size() - len(',"b":""')
    context.record("b", "y" * filler)  # exactly at the cap: kept
    assert len(json.dumps(context.records.values, separators=(",", ":"))) == RECORD_CAP_BYTES
    context.record("c", 0)  # one byte over: dropped
    context.record("a", "x" * 50)  # a key recorded again replaces its value and frees room
    assert context.records.values == {"a": "x" * 50, "b": "y" * filler}
    assert context.records.dropped == ["c"]


def test_the_plugin_logger_is_a_child_of_qevals_logger():
    assert LoadContext(plugin="awqish").logger.name == "qeval.plugin.awqish"
    assert LoadContext(plugin="awqish").logger.parent.name == "qeval.plugin"


def test_progress_draws_a_rich_bar_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    with LoadContext(plugin="p").progress("calibrating", total=3) as advance:
        for _ in range(3):
            advance(1)
    drawn = capsys.readouterr().err
    assert "calibrating" in drawn and "3/3" in drawn and "━" in drawn


def test_plugin_lines_reach_stderr_in_a_run_without_logging_setup(tmp_path):
    """As under ``lm_eval`` (it configures only its own logger) and so in ``qeval run``'s log."""
    script = textwrap.dedent(
        """
        from qeval_plugins.core.quantizer import LoadContext
        context = LoadContext(plugin="awqish")
        with context.progress("calibrating", total=2) as advance:
            advance(2)
        context.logger.info("alpha chosen")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(
        line.endswith("[qeval.plugin.awqish] calibrating: started (2 steps)") for line in lines
    )
    assert any("[qeval.plugin.awqish] calibrating: done, 2/2 in " in line for line in lines)
    assert lines[-1].endswith("INFO     [qeval.plugin.awqish] alpha chosen")
    assert "━" not in result.stderr  # no bar drawn into a file


CALIBRATION_DEFAULTS = """
from dataclasses import replace
from qeval_plugins import CALIBRATION_OPTIONS, Option, Quantizer, hookimpl

class Fewer(Quantizer):
    name = "fewer-windows"
    description = "calibrates on 32 windows by default (test plugin)"
    calibrated = True
    options = tuple(
        replace(option, default=32) if option.name == "calibration_samples" else option
        for option in CALIBRATION_OPTIONS
    )

class Wider(Quantizer):
    name = "wider-range"
    description = "changes a calibration option's bounds (test plugin)"
    calibrated = True
    options = tuple(
        replace(option, maximum=10**9) if option.name == "calibration_samples" else option
        for option in CALIBRATION_OPTIONS
    )

@hookimpl
def qeval_register_quantizers(register):
    register(Fewer())
    register(Wider())
"""


def test_a_plugin_may_change_only_the_defaults_of_calibration_options(
    monkeypatch, tmp_path, fresh_registry
):
    from qeval_plugins.core.plan import plan_quantization
    from qeval_plugins.core.registry import get_registry

    fake_plugins(monkeypatch, tmp_path, {"defaults": CALIBRATION_DEFAULTS})
    registry = get_registry()
    assert registry.get("fewer-windows").quantizer.options[1].default == 32
    assert plan_quantization("fewer-windows", {}, set(), "cpu").options["calibration_samples"] == 32
    problems = " ".join(registry.plugins["defaults"].problems)
    assert "calibration option 'calibration_samples' may change only its default and help" in (
        problems
    )
    assert "its maximum differ from qeval's" in problems
    with pytest.raises(QevalError, match="wider-range"):
        plan_quantization("wider-range", {}, set(), "cpu")


def test_cache_list_does_not_print_a_plugins_record(calibrating, tiny_model_dir, capsys):
    from qeval_plugins.cli.main import main

    load(tiny_model_dir, "calibrating", **SMALL)
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "calibrating" in listing and "1 entry" in listing
    assert "plugin_record" not in listing and "alpha" not in listing
