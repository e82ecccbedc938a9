"""The cheap features by hand: SQNR and noise scale, format descriptors, the noise passes leaving
the weights as they were, and the feature cache."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from qeval_plugins.predict import feature_cache, landscape
from qeval_plugins.predict.features import (
    SQNR_CAP_DB,
    format_descriptors,
    linear_layers,
    sqnr_db,
    twin_layer_energies,
)
from qeval_plugins.predict.rtn_twin import RtnTwin


class ToyLM(torch.nn.Module):
    """Embedding → Linear → output projection, with transformers' ``.logits`` answer."""

    def __init__(self, vocabulary: int = 11, width: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocabulary, width)
        self.inner = torch.nn.Linear(width, width, bias=False)
        self.head = torch.nn.Linear(width, vocabulary, bias=False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, tokens):
        return SimpleNamespace(logits=self.head(torch.tanh(self.inner(self.embed(tokens)))))


def test_sqnr_in_db_with_its_cap():
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_db(1.0, 0.0) == SQNR_CAP_DB
    assert sqnr_db(1e30, 1e-30) == SQNR_CAP_DB


def test_noise_of_sigma_has_the_asked_sqnr():
    weight = torch.randn(256, 512, generator=torch.Generator().manual_seed(1))
    sigma = landscape.noise_sigma(weight, 15.0)
    noise = sigma * torch.randn(weight.shape, generator=torch.Generator().manual_seed(2))
    measured = sqnr_db(float(weight.double().pow(2).sum()), float(noise.double().pow(2).sum()))
    assert measured == pytest.approx(15.0, abs=0.05)


def test_the_twin_rounds_every_linear_but_the_output_projection():
    model = ToyLM()
    layers = linear_layers(model)
    assert [name for name, _ in layers] == ["inner"]
    signal, noise = twin_layer_energies(layers, RtnTwin("int", 4, 0, True))["inner"]
    assert signal == pytest.approx(float(model.inner.weight.detach().double().pow(2).sum()))
    assert 0 < noise < signal / 10  # int4 per channel: roughly 20 dB on a Gaussian-ish row


def test_format_descriptors():
    nf4 = format_descriptors(RtnTwin("nf4", 4, 64, True), 1024)
    assert nf4 == {
        "element_kind": 2.0,
        "element_bits": 4.0,
        "group_log2": 6.0,
        "scale_type": 0.0,
        "bits_per_param": 4.25,
    }
    per_channel = format_descriptors(RtnTwin("int", 3, 0, False), 1024)
    assert per_channel["group_log2"] == 10.0 and per_channel["scale_type"] == 1.0
    assert per_channel["bits_per_param"] == pytest.approx(3 + 32 / 1024)
    mx = format_descriptors(RtnTwin("mxfp4", 4, 32, True), 1024)
    assert (mx["element_kind"], mx["group_log2"], mx["scale_type"]) == (4.0, 5.0, 2.0)
    assert mx["bits_per_param"] == 4.25


def test_noise_passes_restore_the_weights_bit_for_bit():
    model = ToyLM()
    layers = linear_layers(model)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    ids = [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [7, 8, 9]]
    clean = landscape.mean_nll(model, ids)
    noisy = landscape.noisy_nll(model, layers, {"inner": 0.0}, ids)
    again = landscape.noisy_nll(model, layers, {"inner": 0.0}, ids)
    assert noisy == again != clean  # seeded: the same draw each time
    assert landscape.mean_nll(model, ids) == clean
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])


def test_mean_nll_by_hand():
    model = ToyLM()
    ids = [[1, 2, 3], [4, 5]]
    total = 0.0
    for row in ids:
        with torch.no_grad():
            logits = model(torch.tensor([row])).logits[0, :-1]
        total -= float(
            torch.log_softmax(logits, -1).gather(1, torch.tensor(row[1:])[:, None]).sum()
        )
    assert landscape.mean_nll(model, ids) == pytest.approx(total / 3, rel=1e-6)


def test_the_cache_recomputes_a_damaged_entry_and_survives_an_unwritable_folder(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def compute():
        calls.append(1)
        return {"a": 1.5}

    parts = {"kind": "test"}
    assert feature_cache.cached(parts, compute) == ({"a": 1.5}, False)
    assert feature_cache.cached(parts, compute) == ({"a": 1.5}, True)
    entry = feature_cache.predict_cache_dir() / f"{feature_cache.entry_key(parts)}.json"
    entry.write_text('{"values": {"a": NaN}}')
    assert feature_cache.cached(parts, compute) == ({"a": 1.5}, False)
    assert len(calls) == 2 and math.isfinite(feature_cache.cached(parts, compute)[0]["a"])
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("QEVAL_CACHE_DIR", str(blocked))
    assert feature_cache.cached(parts, compute) == ({"a": 1.5}, False)
