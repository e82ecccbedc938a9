"""What a run records of its bits and times: kept layers in ``effective_bits`` (the figure
``qeval scan`` computes for the same skip set) and quantize time apart from load time."""

from __future__ import annotations

import copy
import time

import pytest

# qeval-tiny: 4 blocks of 7 linears, float32: q/o 128×128, k/v 64×128 (2 KV heads of 32),
# gate/up 384×128, down 128×384; embeddings and lm_head are not rtn's targets, so not counted
BLOCK = 2 * 128 * 128 + 2 * 64 * 128 + 3 * 384 * 128
INT4_G128 = 4 + 16 / 128


def qeval_block(**model_args) -> dict:
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM(pretrained="qeval-tiny", device="cpu", **model_args)
    return lm, lm.get_model_info()["qeval"]


def test_kept_layers_count_at_their_dtype_bits_in_effective_bits():
    _, block = qeval_block(quantizer="rtn", skip="layers.0")
    by_hand = (BLOCK * 32 + 3 * BLOCK * INT4_G128) / (4 * BLOCK)  # 11.09375, blocks alike
    assert block["effective_bits"] == pytest.approx(by_hand)
    assert block["quantized_bits"] == INT4_G128
    assert (block["kept_layers"], block["kept_params"], block["kept_bits"]) == (7, BLOCK, 32.0)
    assert "layers.0" in block["scheme"]["kept"]


def test_without_skip_effective_bits_is_the_quantizers_own():
    _, block = qeval_block(quantizer="rtn")
    assert block["effective_bits"] == INT4_G128 and block["kept_layers"] == 0


def test_run_and_scan_give_the_same_bits_for_the_same_skip_set():
    """The scan's figure (over the weights rtn changed, one unit per layer) with the layers of
    block 0 and one down_proj kept, and the figure a run with that skip set records."""
    from qeval_plugins import LoadContext
    from qeval_plugins.core.quantizer import bits_per_param
    from qeval_plugins.evals.scan import engine
    from qeval_plugins.quantizers.rtn import RtnQuantizer

    _, block = qeval_block(quantizer="rtn", skip="layers.0+layers.3.mlp.down_proj")
    lm, plain = qeval_block(quantizer="none")
    reference = lm.model
    rtn = RtnQuantizer()
    options = rtn.finalize_options({option.name: option.default for option in rtn.options})
    quantized = rtn.quantize(copy.deepcopy(reference), options, LoadContext())
    units = engine.make_units(reference, engine.quantized_weights(reference, quantized), "layer")
    params = {unit.name: unit.params for unit in units}
    kept = [name for name in params if ".layers.0." in name or name.endswith("3.mlp.down_proj")]
    assert len(kept) == 8 and sum(params.values()) == 4 * BLOCK
    kept_bits = float(next(reference.parameters()).element_size() * 8)  # as the scan takes it
    scan = bits_per_param(params, kept, rtn.effective_bits(options), kept_bits)
    assert block["effective_bits"] == scan
    assert block["kept_layers"] == 8 and plain["quantize_seconds"] is None


LOAD_DELAY = 3.0  # seconds added to the checkpoint load


def test_quantize_seconds_leave_the_load_out(monkeypatch):
    from lm_eval.models.huggingface import HFLM

    slow_load = HFLM._create_model

    def create_model(self, *args, **kwargs):
        time.sleep(LOAD_DELAY)
        return slow_load(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_create_model", create_model)
    _, block = qeval_block(quantizer="rtn")
    assert block["load_seconds"] >= LOAD_DELAY
    assert 0 < block["quantize_seconds"] < LOAD_DELAY  # rtn on qeval-tiny: well under 1 s
    assert block["quantized_while_loading"] is False and "transform_seconds" not in block


def test_quantizing_inside_from_pretrained_is_said_and_timed_with_the_load():
    _, bnb = qeval_block(quantizer="bnb-nf4")
    assert bnb["quantized_while_loading"] is True
    # the load (which quantizes) plus bnb's quantize step, which does nothing
    assert bnb["load_seconds"] <= bnb["quantize_seconds"] < bnb["load_seconds"] + 0.05
    _, none = qeval_block(quantizer="none")  # its dtype load argument quantizes nothing
    assert none["quantized_while_loading"] is False and none["quantize_seconds"] is None


def test_gptq_sim_splits_the_decoder_linears_as_rtn_does():
    from transformers import AutoModelForCausalLM

    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS
    from qeval_plugins.quantizers.gptq_sim import GptqSimQuantizer

    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODELS["qeval-tiny"])
    quantizer = GptqSimQuantizer()
    options = {option.name: option.default for option in quantizer.options}
    params, kept = quantizer.weight_split(model, {**options, "skip": "layers.0+down_proj"})
    assert sum(params.values()) == 4 * BLOCK and len(params) == 28
    assert len(kept) == 7 + 3 and all("layers.0." in n or "down_proj" in n for n in kept)
