"""KV-cache quantization of generations (``kv_backend=sim|quanto|hqq``, model_args or spec)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from qeval_plugins.core.errors import QevalError

PROMPT = "The keeper of the lighthouse"


def load(**model_args):
    from qeval_plugins.backend.lm import QevalLM

    return QevalLM(pretrained="qeval-tiny", quantizer="none", device="cpu", **model_args)


def greedy(model, lm, tokens: int = 24) -> list[int]:
    ids = torch.tensor([lm.tok_encode(PROMPT)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def test_the_simulated_cache_stores_what_rtn_int_rounding_gives():
    """Independent check: symmetric per-token int4 over groups of the head dimension (32 here),
    scale = absmax / 7, as written out by hand."""
    from qeval_plugins.backend.kv_cache import new_cache
    from qeval_plugins.core.kv_settings import KvCache

    settings = KvCache("sim", 4, "int", 64, residual_length=0)
    lm = load()
    cache = new_cache(settings, lm.model.config)
    torch.manual_seed(0)
    keys, values = torch.randn(1, 2, 10, 32), torch.randn(1, 2, 10, 32)
    cache.layers[0].update(keys, values)  # the prompt: stored quantized, returned as it is
    step_k, step_v = torch.randn(1, 2, 1, 32), torch.randn(1, 2, 1, 32)
    got_k, got_v = cache.layers[0].update(step_k, step_v)

    def by_hand(x):
        scale = x.abs().amax(dim=-1, keepdim=True) / 7
        return torch.clamp(torch.round(x / scale), -7, 7) * scale

    torch.testing.assert_close(got_k[:, :, :10], by_hand(keys))
    torch.testing.assert_close(got_v[:, :, :10], by_hand(values))
    torch.testing.assert_close(got_k[:, :, 10:], step_k)  # the newest token stays exact


def test_generations_change_with_the_kv_bits_and_the_reference_never_does():
    plain = load()
    expected = greedy(plain.model, plain)
    # measured over 24 tokens: int8 keeps all, int4 25 of 40 with no full-precision window
    assert greedy(load(kv_bits=8).model, plain) == expected  # kv_backend=sim is implied
    coarse = load(kv_backend="sim", kv_bits=2, kv_residual_length=0)
    assert greedy(coarse.model, coarse) != expected
    assert coarse.on_reference_model(lambda model: greedy(model, coarse)) == expected
    assert greedy(coarse.model, coarse) != expected  # still quantized after the reload
    block = coarse.get_model_info()["qeval"]["kv_cache"]
    assert (
        block["describe"] == "int2 g64 r0 (sim)"
        and plain.get_model_info()["qeval"]["kv_cache"] is None
    )


def test_scoring_is_unchanged():
    """Loglikelihoods run without a cache: KV quantization must not touch them."""
    ids = torch.tensor([[0, 5, 17, 99, 400]])
    with torch.no_grad():
        assert torch.equal(
            load().model(ids).logits, load(kv_backend="sim", kv_bits=2).model(ids).logits
        )


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ({"kv_backend": "none", "kv_bits": 4}, "kv_bits has no effect with kv_backend=none"),
        ({"kv_backend": "smi"}, "Did you mean 'sim'"),
        ({"kv_bits": "four"}, "kv_bits must be a whole number from 1 to 8, got 'four'"),
        ({"kv_backend": "sim", "kv_format": "fp9"}, "kv_format=fp9 is not an rtn format"),
        (
            {"kv_backend": "sim", "kv_format": "mxfp4", "kv_bits": 3},
            r"kv_bits=3 has no effect with kv_format=mxfp4 \(which sets kv_bits=4\)",
        ),
        ({"kv_backend": "sim", "kv_bits": 9}, "kv_bits must be a whole number from 1 to 8"),
        (
            {"kv_backend": "sim", "kv_group_size": 24},
            "does not divide the model's head dimension 32",
        ),
        ({"kv_backend": "quanto", "kv_bits": 3}, "stores 2 or 4 bits"),
        ({"kv_backnd": "sim"}, "Did you mean 'kv_backend'"),
    ],
)
def test_bad_kv_settings_are_one_line(model_args, message):
    with pytest.raises(QevalError, match=message) as error:
        load(**model_args)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("backend", "module"), [("quanto", "optimum.quanto"), ("hqq", "hqq")])
def test_transformers_library_caches_are_used_as_they_are(backend, module):
    if (
        importlib.util.find_spec(module.split(".")[0]) is None
        or importlib.util.find_spec(module) is None
    ):
        pytest.skip(f"kv_backend={backend} needs {module}: pip install 'qeval[{backend}]'")
    lm = load(kv_backend=backend, kv_bits=4, kv_residual_length=0)
    assert 0 < len(greedy(lm.model, lm)) <= 24  # may stop early, at an end-of-text token
    assert lm.get_model_info()["qeval"]["kv_cache"]["describe"] == f"int4 g64 r0 ({backend})"


def test_a_missing_cache_library_is_one_line_with_the_install_command(monkeypatch):
    """optimum (installed with the gptq extra) without optimum-quanto passed the check before."""
    from conftest import hide_module

    hide_module(monkeypatch, "optimum.quanto")
    with pytest.raises(
        QevalError,
        match=r"needs optimum\.quanto, which is not installed; run: pip install 'qeval\[quanto\]'",
    ):
        load(kv_backend="quanto", kv_bits=4)


def test_the_report_labels_runs_by_their_kv_cache(tmp_path):
    from qeval_plugins.report.load import load_runs

    data = {
        "results": {"qeval_demo_facts": {"acc,none": 0.5, "acc_stderr,none": 0.1}},
        "config": {
            "model": "qeval",
            "model_args": {"pretrained": "qeval-tiny", "quantizer": "rtn"},
            "qeval": {"quantizer": "rtn", "spec": "rtn", "kv_cache": {"describe": "int4 g64"}},
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(data))
    runs, _ = load_runs([str(tmp_path)])
    assert [run.label for run in runs] == ["rtn [kv int4 g64]"]


@pytest.mark.slow
def test_a_sampling_task_sees_the_quantized_cache(tasks_dir):
    """Through lm-eval: greedy generations of the quantized model move away from the reference's
    (agree_tokens 0.92 → 0.78 on two prompts at int2 with no full-precision window)."""
    from conftest import evaluate

    def agreement(model_args: str) -> float:
        results = evaluate(model_args, ["qeval_temperature_0.0"], tasks_dir, limit=2)
        return results["results"]["qeval_temperature_0.0"]["agree_tokens,none"]

    plain = agreement("pretrained=qeval-tiny,quantizer=rtn")
    with_kv = agreement("pretrained=qeval-tiny,quantizer=rtn,kv_bits=2,kv_residual_length=0")
    assert with_kv < plain - 0.05


def test_a_spec_may_set_the_kv_cache_and_qeval_run_keeps_such_runs_apart(tmp_path):
    """``rtn:bits=4:kv_bits=2`` is a run of its own: checked, named and keyed by its KV cache."""
    from qeval_plugins.core.plan import check_spec
    from qeval_plugins.sweep.planning import plan_runs

    plan = check_spec("rtn:bits=4:kv_bits=2:kv_residual_length=0")
    assert (
        plan.spec == "rtn:bits=4" and plan.record()["kv_cache"]["describe"] == "int2 g64 r0 (sim)"
    )
    with pytest.raises(QevalError, match=r"kv_bits must be a whole number from 1 to 8, got 9\."):
        check_spec("rtn:kv_bits=9")
    runs = plan_runs(["qeval-tiny"], ["rtn:bits=4", "rtn:bits=4:kv_bits=2"], tmp_path, "cpu")
    assert [run.directory.name for run in runs] == [
        "qeval-tiny__rtn_bits-4",
        "qeval-tiny__rtn_bits-4_kv_bits-2",
    ]
    with pytest.raises(QevalError, match="are the same run"):
        plan_runs(["qeval-tiny"], ["rtn:kv_bits=4", "rtn:kv_backend=sim"], tmp_path, "cpu")
    # groups that split a head (qeval-tiny's is 32 wide) are refused before any model loads
    with pytest.raises(QevalError, match="kv_group_size=24 does not divide the model's head dim"):
        plan_runs(["qeval-tiny"], ["none", "rtn:kv_group_size=24"], tmp_path, "cpu")


@pytest.mark.parametrize(
    ("config", "head_dim"),
    [
        ({"head_dim": 64, "hidden_size": 128, "num_attention_heads": 4}, 64),
        ({"hidden_size": 128, "num_attention_heads": 4}, 32),
        ({"text_config": {"hidden_size": 256, "num_attention_heads": 2}}, 128),
        ({"hidden_size": "128", "num_attention_heads": 4}, None),
        ({"hidden_size": 128, "num_attention_heads": 0}, None),
        ([], None),
    ],
)
def test_the_head_dimension_is_read_from_any_config_json(config, head_dim):
    from qeval_plugins.core.kv_settings import config_head_dim

    assert config_head_dim(config) == head_dim
