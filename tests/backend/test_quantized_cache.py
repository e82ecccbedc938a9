"""The quantized-model cache and calibration, through the backend, with a calibrating plugin.

The plugin below (``counting-rtn``) is what a calibrating method looks like to qeval: it reads
``context.calibration``, sets ``cache_quantized`` and counts its ``quantize`` calls in a file, so
the tests see how often a run really quantized.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch
from conftest import only_qeval_group, replace_keeping_size_and_mtime

from qeval_plugins.core.errors import QevalError

PLUGIN = """
    import json, os
    from qeval_plugins import CALIBRATION_OPTIONS, Option, Quantizer, Scheme, hookimpl

    class CountingRtn(Quantizer):
        name = "counting-rtn"
        description = "rtn int that counts its quantize calls (tests)"
        options = (Option("bits", int, 4, "bits", minimum=2, maximum=8), *CALIBRATION_OPTIONS)
        calibrated = True
        cache_quantized = True
        simulated = True

        def quantize(self, model, options, context):
            import torch
            from qeval_plugins.formats.rounding import quantize_dequantize

            with open(os.environ["COUNTING_RTN_LOG"], "a") as log:
                log.write(json.dumps({"tokens": context.calibration.tokens_sha256}) + "\\n")
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, torch.nn.Linear) and module.out_features != 2048:
                        module.weight.data = quantize_dequantize(
                            module.weight.data, "int", bits=options["bits"], group_size=128
                        )
            return model

        def scheme(self, options):
            return Scheme(weights=f"int{options['bits']} g128")

    @hookimpl
    def qeval_register_quantizers(register):
        register(CountingRtn())
"""


@pytest.fixture
def counting_rtn(monkeypatch, tmp_path, fresh_registry):
    """The plugin installed as the only external one; returns its call log."""
    (tmp_path / "counting_rtn_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.delitem(sys.modules, "counting_rtn_plugin", raising=False)
    importlib.invalidate_caches()
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="counting", value="counting_rtn_plugin", group="qeval")
    only_qeval_group(monkeypatch, [point])
    log = tmp_path / "calls.jsonl"
    log.touch()
    monkeypatch.setenv("COUNTING_RTN_LOG", str(log))
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def load(**options):
    from qeval_plugins.backend.lm import QevalLM

    args = {"calibration_samples": 4, "calibration_seqlen": 64, **options}
    return QevalLM(pretrained="qeval-tiny", quantizer="counting-rtn", device="cpu", **args)


def logits(lm) -> torch.Tensor:
    return model_logits(lm.model)


def model_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[0, 5, 17, 99, 400, 1000]])).logits


def test_a_second_run_and_the_reference_reload_reuse_the_quantized_model(counting_rtn):
    first = load()
    expected = logits(first)
    block = first.get_model_info()["qeval"]
    assert len(calls(counting_rtn)) == 1
    assert block["quantized_cache"]["reused"] is False
    assert block["calibration"]["samples"] == 4 and block["calibration"]["seqlen"] == 64
    assert block["calibration"]["source"] == "bundled"
    assert calls(counting_rtn)[0]["tokens"] == block["calibration"]["tokens_sha256"]
    # the reference pass drops the quantized model; reloading it must not quantize again
    reference = first.on_reference_model(model_logits)
    assert not torch.equal(reference, expected)
    assert torch.equal(logits(first), expected) and len(calls(counting_rtn)) == 1

    second = load()
    again = second.get_model_info()["qeval"]
    assert len(calls(counting_rtn)) == 1
    assert torch.equal(logits(second), expected)
    assert again["quantized_cache"]["reused"] is True
    assert again["quantized_cache"]["key"] == block["quantized_cache"]["key"]
    # the cost of the method stays the original quantize time, not the reload's
    assert again["quantize_seconds"] == block["quantized_cache"]["quantize_seconds"]
    assert block["quantize_seconds"] == block["quantized_cache"]["quantize_seconds"]


@pytest.mark.parametrize(
    "change", [{"bits": 3}, {"calibration_samples": 5}, {"calibration_seed": 1}]
)
def test_anything_the_weights_depend_on_gives_a_new_entry(counting_rtn, change):
    load()
    load(**change)
    assert len(calls(counting_rtn)) == 2
    assert len({call["tokens"] for call in calls(counting_rtn)}) == (1 if "bits" in change else 2)


def test_a_flipped_byte_is_detected_and_the_entry_replaced(counting_rtn, caplog):
    expected = logits(load())
    [weights] = (Path(load().get_model_info()["qeval"]["quantized_cache"]["dir"])).glob(
        "*.safetensors"
    )
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor: a different weight, still a loadable file
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="qeval"):
        lm = load()
    assert "fails its SHA-256 checksum" in caplog.text
    assert len(calls(counting_rtn)) == 2 and torch.equal(logits(lm), expected)
    assert lm.get_model_info()["qeval"]["quantized_cache"]["reused"] is False
    assert load().get_model_info()["qeval"]["quantized_cache"]["reused"] is True


def test_an_unchanged_entry_is_not_hashed_again(counting_rtn, monkeypatch):
    """Hashing every file on every load would cost more than loading a large model."""
    from qeval_plugins.storage import model_cache

    load()
    hashed = []
    real = model_cache.file_digest
    monkeypatch.setattr(model_cache, "file_digest", lambda path: hashed.append(path) or real(path))
    load()
    load()
    assert hashed == [] and len(calls(counting_rtn)) == 1


def test_an_entry_without_its_metadata_is_warned_about_and_replaced(counting_rtn, caplog):
    folder = Path(load().get_model_info()["qeval"]["quantized_cache"]["dir"])
    folder.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger="qeval"):
        lm = load()
    assert "has no valid metadata file" in caplog.text and len(calls(counting_rtn)) == 2
    assert lm.get_model_info()["qeval"]["quantized_cache"]["reused"] is False
    assert load().get_model_info()["qeval"]["quantized_cache"]["reused"] is True


def test_an_extra_file_in_an_entry_makes_it_untrusted(counting_rtn, caplog):
    folder = Path(load().get_model_info()["qeval"]["quantized_cache"]["dir"])
    (folder / "modeling_evil.py").write_text("raise SystemExit('never run')\n")
    with caplog.at_level(logging.WARNING, logger="qeval"):
        load()
    assert "does not hold the files it lists (modeling_evil.py)" in caplog.text
    assert len(calls(counting_rtn)) == 2


def test_cache_list_and_clear_cover_quantized_models(counting_rtn, capsys):
    from qeval_plugins.cli.main import main

    load()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "quantized" in out and "counting-rtn" in out and "1 entry" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    load()
    assert len(calls(counting_rtn)) == 2


def test_the_size_cap_counts_quantized_models(counting_rtn, monkeypatch):
    from qeval_plugins.storage import cache_pruning

    load()
    [entry] = cache_pruning.entries()
    assert entry.store == "quantized" and entry.size > 1_000_000  # the 5 MB embedded model
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", str(entry.size + 1000))
    load(bits=3)  # the older entry goes; the one just saved stays
    assert [e.meta["options"]["bits"] for e in cache_pruning.entries()] == [3]


def test_an_unwritable_cache_warns_and_the_run_goes_on(counting_rtn, monkeypatch, caplog):
    monkeypatch.setenv("QEVAL_CACHE_DIR", "/dev/null/qeval")
    with caplog.at_level(logging.WARNING, logger="qeval"):
        lm = load()
    assert "could not store the quantized model" in caplog.text
    assert lm.get_model_info()["qeval"]["quantized_cache"]["reused"] is False


def test_windows_longer_than_the_model_context_are_refused(counting_rtn):
    with pytest.raises(QevalError, match=r"calibration_seqlen=600 is longer than the model's"):
        load(calibration_seqlen=600)  # the embedded model's context is 512 tokens
    assert calls(counting_rtn) == []


def test_a_bad_cache_size_is_refused_before_quantizing(counting_rtn, monkeypatch):
    monkeypatch.setenv("QEVAL_CACHE_MAX_SIZE", "lots")
    with pytest.raises(QevalError, match="QEVAL_CACHE_MAX_SIZE 'lots' is not a size"):
        load()
    assert calls(counting_rtn) == []


def test_bad_calibration_files_are_one_line_errors(counting_rtn, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(QevalError, match=r"line 2 is not a JSON object with a \"text\""):
        load(calibration_file=str(bad))
    short = tmp_path / "short.txt"
    short.write_text("Only a few words.\n\nAnd a few more.\n")
    with pytest.raises(QevalError, match="fewer than calibration_seqlen=64"):
        load(calibration_file=str(short))
    with pytest.raises(QevalError, match="cannot be read"):
        load(calibration_file=str(tmp_path / "missing.txt"))


def test_rtn_gets_and_records_calibration_only_when_its_options_read_it():
    """Static activation scales and SmoothQuant calibrate; plain rtn builds no windows."""
    from qeval_plugins.backend.lm import QevalLM

    small = {"calibration_samples": 2, "calibration_seqlen": 32}
    plain = QevalLM(pretrained="qeval-tiny", quantizer="rtn", device="cpu")  # `small`: refused
    assert "calibration" not in plain.get_model_info()["qeval"]
    smoothed = QevalLM(
        pretrained="qeval-tiny",
        quantizer="rtn",
        device="cpu",
        act_format="int",
        act_granularity="tensor",
        smooth=0.5,
        **small,
    )
    recorded = smoothed.get_model_info()["qeval"]["calibration"]
    assert (recorded["samples"], recorded["seqlen"], recorded["source"]) == (2, 32, "bundled")


def test_weights_replaced_with_size_and_mtime_kept_are_quantized_afresh(
    counting_rtn, tmp_path, monkeypatch
):
    """Other weights copied over ``model.safetensors`` with ``cp -p`` (same name, size and
    mtime) reused the quantized model of the old weights: the key held only those stats."""

    from qeval_plugins.backend.lm import QevalLM
    from qeval_plugins.storage import content_hash
    from qeval_plugins.testing import make_tiny_model

    monkeypatch.setattr(content_hash, "RACY_NS", 0)  # the memo is used, as for an old model
    model = make_tiny_model(tmp_path / "model", seed=0) / "model.safetensors"
    other = make_tiny_model(tmp_path / "other", seed=1) / "model.safetensors"
    ids = torch.tensor([[0, 5, 17, 99, 200, 380]])

    def run(folder: Path) -> tuple[dict, torch.Tensor]:
        lm = QevalLM(
            pretrained=str(folder),
            quantizer="counting-rtn",
            device="cpu",
            calibration_samples=4,
            calibration_seqlen=64,
        )
        with torch.no_grad():
            return lm.get_model_info()["qeval"]["quantized_cache"], lm.model(ids).logits

    first, _ = run(model.parent)
    assert run(model.parent)[0]["reused"] is True and len(calls(counting_rtn)) == 1
    replace_keeping_size_and_mtime(model, other)
    second, replaced = run(model.parent)
    assert second["reused"] is False and second["key"] != first["key"]
    assert len(calls(counting_rtn)) == 2
    _, expected = run(other.parent)  # the other weights quantized from their own folder
    assert torch.equal(replaced, expected)
