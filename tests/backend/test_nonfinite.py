"""A quantizer whose model outputs NaN logits fails the run with one line naming it.

Before, such a model scored like a bad one (``acc 0.0``, exit 0): lm-eval ranks NaN
log-likelihoods without a word. The test quantizer is ``rtn`` whose weights are then poisoned
(one layer set to NaN), through the real backend, on every path that runs the model.
"""

from __future__ import annotations

import pytest

from qeval_plugins.core.errors import QevalError


@pytest.fixture
def nan_weights(monkeypatch, tmp_path):
    """Every quantized model gets the first decoder layer's ``down_proj`` filled with NaN."""
    import torch

    from qeval_plugins.core import registry

    monkeypatch.setenv("QEVAL_CACHE_DIR", str(tmp_path / "cache"))
    quantize = registry.run_quantize

    def poisoned(*args, **kwargs):
        model = quantize(*args, **kwargs)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr(registry, "run_quantize", poisoned)


def evaluate(model_args: str, task: str, tasks_dir) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=model_args,
        tasks=[task],
        device="cpu",
        batch_size=2,
        limit=2,
        task_manager=TaskManager(include_path=str(tasks_dir)),
    )


@pytest.mark.parametrize(
    ("task", "where"),
    [
        ("qeval_demo_facts", "loglikelihood batch"),  # multiple choice: loglikelihood
        ("qeval_demo_ppl", "loglikelihood batch"),  # loglikelihood_rolling
        ("qeval_demo_cloze", "generation step"),  # generate_until
        ("qeval_sqnr", "qeval_sqnr pass"),  # qeval's own request type
    ],
)
def test_nan_logits_fail_the_run_with_one_line_naming_the_quantizer(
    nan_weights, tiny_model_dir, tasks_dir, task, where
):
    with pytest.raises(QevalError) as error:
        evaluate(f"pretrained={tiny_model_dir},quantizer=rtn,bits=4", task, tasks_dir)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"quantizer 'rtn' (rtn:bits=4) made the model output NaN/inf logits in a {where} ("
    )
    assert "its weights are not finite" in message


def test_every_logit_is_counted_in_the_message(nan_weights, tiny_model_dir, tasks_dir):
    """One NaN row of ``down_proj`` reaches every position through the next norm: all logits of
    the batch are NaN, and the message says how many of how many."""
    with pytest.raises(QevalError, match=r"\((\d[\d,]*) of \1 logits\)"):
        evaluate(f"pretrained={tiny_model_dir},quantizer=rtn,bits=4", "qeval_demo_ppl", tasks_dir)


def test_the_unquantized_model_is_named_as_itself(nan_weights, tiny_model_dir, tasks_dir):
    with pytest.raises(QevalError, match=r"^the model itself \(quantizer 'none'\) output NaN/inf"):
        evaluate(f"pretrained={tiny_model_dir},quantizer=none", "qeval_demo_facts", tasks_dir)


def test_finite_logits_pass_and_the_check_adds_no_forward(tiny_model_dir, tasks_dir, monkeypatch):
    """The check is a hook on the passes the run makes anyway: one model forward per
    loglikelihood batch, as many as without the hook."""
    from lm_eval.models.huggingface import HFLM

    calls = []
    model_call = HFLM._model_call
    monkeypatch.setattr(
        HFLM, "_model_call", lambda self, *a, **k: calls.append(1) or model_call(self, *a, **k)
    )
    forwards = []

    import transformers

    forward = transformers.LlamaForCausalLM.forward
    monkeypatch.setattr(
        transformers.LlamaForCausalLM,
        "forward",
        lambda self, *a, **k: forwards.append(1) or forward(self, *a, **k),
    )
    results = evaluate(
        f"pretrained={tiny_model_dir},quantizer=rtn,bits=4", "qeval_demo_ppl", tasks_dir
    )
    assert results["results"]["qeval_demo_ppl"]["word_perplexity,none"] > 1
    assert len(forwards) == len(calls) > 0
