"""GPTQ against RTN at equal format on a second trained model, trained here in a few seconds.

The embedded model is one trained model (tests/quantizers/test_gptq_sim.py); a result that held
only there could be a property of that model. This one is a 2-layer Llama (hidden 128, 384-token
BPE vocabulary) from ``make_tiny_model``, trained for 150 steps on the bundled calibration
passages; it is calibrated on windows of those passages and evaluated on ``qeval_sqnr``'s, which
it never saw.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from qeval_plugins import LoadContext
from qeval_plugins.core.calibration import build_calibration, read_passages
from qeval_plugins.core.plan import plan_quantization
from qeval_plugins.metrics.divergence import exact_kl, tensor_sqnr_db
from qeval_plugins.testing import make_tiny_model

CALIBRATION = dict(
    calibration_file="bundled", calibration_samples=16, calibration_seqlen=128, calibration_seed=0
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, tokenizer, path): the tiny model after 150 AdamW steps of next-token loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("trained") / "tiny", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    passages, _, _ = read_passages("bundled")
    stream = torch.tensor(
        [i for text in passages for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    )
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(150):
        starts = torch.randint(0, len(stream) - 129, (8,), generator=generator)
        batch = torch.stack([stream[start : start + 128] for start in starts.tolist()])
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 4.0  # it learned: 2.85 measured; ln(384) = 5.95 for a uniform guess
    model.eval()
    model.save_pretrained(path)
    return model, tokenizer, path


@pytest.fixture(scope="module")
def measure(trained, tasks_dir):
    """(logit SQNR dB, mean KL(P_ref‖P_quant) nats) of a quantized copy on held-out text."""
    model, tokenizer, _ = trained
    lines = (tasks_dir / "qeval_sqnr" / "passages.jsonl").read_text().splitlines()[:4]
    texts = [json.loads(line)["text"] for line in lines]
    held_out = [torch.tensor(tokenizer(t)["input_ids"][:256]) for t in texts]

    def logits(of):
        with torch.no_grad():
            return torch.cat([of(ids[None]).logits[0] for ids in held_out])

    reference = logits(model)

    def of(quantized):
        out = logits(quantized)
        return tensor_sqnr_db(reference, out), float(exact_kl(reference, out).mean())

    return of


def quantize(trained, spec: str, tmp_path, **options):
    model, tokenizer, path = trained
    plan = plan_quantization(spec, options, set(), "cpu")
    context = LoadContext(
        device="cpu",
        dtype="float32",
        checkpoint=str(path),
        tokenizer=tokenizer,
        calibration=build_calibration(tokenizer, CALIBRATION)
        if plan.quantizer.calibrated
        else None,
        cache_dir=str(tmp_path),
    )
    return plan.quantizer.quantize(copy.deepcopy(model), plan.options, context).eval()


@pytest.mark.parametrize(
    "options", [dict(bits=4), dict(bits=3), dict(format="mxfp4")], ids=["int4", "int3", "mxfp4"]
)
def test_gptq_sim_beats_rtn_on_a_second_trained_model(trained, measure, tmp_path, options):
    """int4 g128 measured: logit SQNR 27.2 → 32.9 dB, KL 0.0095 → 0.0025 nats (rtn → gptq-sim)."""
    rtn_sqnr, rtn_kl = measure(quantize(trained, "rtn", tmp_path, **options))
    gptq_sqnr, gptq_kl = measure(quantize(trained, "gptq-sim", tmp_path, **options, **CALIBRATION))
    assert gptq_sqnr > rtn_sqnr and gptq_kl < rtn_kl, (rtn_sqnr, gptq_sqnr, rtn_kl, gptq_kl)


def test_gptq_beats_rtn_on_a_second_trained_model(trained, measure, tmp_path):
    """int4 g128 measured: logit SQNR 27.2 → 34.5 dB, KL 0.0095 → 0.0019 nats (rtn → gptq)."""
    pytest.importorskip("gptqmodel", reason="gptq needs GPTQModel: pip install 'qeval[gptq]'")
    rtn_sqnr, rtn_kl = measure(quantize(trained, "rtn", tmp_path, bits=4))
    gptq_sqnr, gptq_kl = measure(quantize(trained, "gptq", tmp_path, **CALIBRATION))
    assert gptq_sqnr > rtn_sqnr and gptq_kl < rtn_kl, (rtn_sqnr, gptq_sqnr, rtn_kl, gptq_kl)
