"""Sampling-sensitivity tasks: seeds, greedy, settings as stated, diversity, agreement."""

from __future__ import annotations

import json

import pytest
from conftest import lm_eval_args, run_cli

from qeval_plugins import QevalError
from qeval_plugins.evals.sampling.engine import GenerationSettings, generate


def sampling_run(tasks_dir, model_args: str, tasks: list[str], limit: int = 2, **meta) -> dict:
    """simple_evaluate with short generations (runtime metadata overrides the YAMLs')."""
    from conftest import evaluate

    return evaluate(model_args, tasks, tasks_dir, limit, {"max_new_tokens": 12, **meta})


@pytest.fixture(scope="module")
def embedded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qeval_plugins.backend.checkpoints import resolve_pretrained

    path = resolve_pretrained("qeval-tiny")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_same_seed_same_generations_and_greedy_is_deterministic(embedded):
    model, tokenizer = embedded
    prompt = "The people of Varnia"
    ids = tokenizer.encode(prompt)
    hot = GenerationSettings(temperature=1.0, max_new_tokens=16, seed=7)
    first = generate(model, tokenizer, prompt, ids, hot, 4)
    assert first == generate(model, tokenizer, prompt, ids, hot, 4)  # same seed: same samples
    assert len({tuple(s) for s in first}) > 1  # but the samples differ from each other
    other = generate(model, tokenizer, prompt, ids, GenerationSettings(1.0, 0, 16, seed=8), 4)
    assert other != first
    greedy = generate(model, tokenizer, prompt, ids, GenerationSettings(max_new_tokens=16), 3)
    assert greedy[0] == greedy[1] == greedy[2] and len(greedy[0]) > 0


def test_settings_reach_generate_exactly(embedded, monkeypatch):
    model, tokenizer = embedded
    seen = []
    original = model.generate
    monkeypatch.setattr(
        model, "generate", lambda *a, **k: seen.append(k["generation_config"]) or original(*a, **k)
    )
    ids = tokenizer.encode("A quiet morning")
    generate(model, tokenizer, "A quiet morning", ids, GenerationSettings(0.5, 40, 12), 2)
    generate(model, tokenizer, "A quiet morning", ids, GenerationSettings(0.0, 40, 9), 1)
    sampled, greedy = seen
    assert (
        sampled.do_sample,
        sampled.temperature,
        sampled.top_k,
        sampled.top_p,
        sampled.max_new_tokens,
    ) == (True, 0.5, 40, 1.0, 12)
    assert (greedy.do_sample, greedy.num_beams, greedy.max_new_tokens) == (False, 1, 9)


def test_bad_settings_are_one_line():
    with pytest.raises(QevalError, match="need temperature >= 0"):
        GenerationSettings.from_mapping({"temperature": -1})
    with pytest.raises(QevalError, match="bad sampling setting"):
        GenerationSettings.from_mapping({"top_k": "many"})


@pytest.mark.slow
def test_unquantized_agrees_with_its_reference_and_diversity_grows(tasks_dir):
    tasks = ["qeval_temperature_0.0", "qeval_temperature_1.0", "qeval_temperature_summary"]
    results = sampling_run(tasks_dir, "pretrained=qeval-tiny,quantizer=none", tasks)
    scores = results["results"]
    for task in tasks[:2]:
        assert scores[task]["agree_tokens,none"] == 1.0
        assert scores[task]["agree_rougeL,none"] == pytest.approx(1.0)
        assert scores[task]["rougeL,none"] == pytest.approx(scores[task]["reference_rougeL,none"])
    assert scores[tasks[1]]["distinct_2,none"] > scores[tasks[0]]["distinct_2,none"]
    assert scores[tasks[0]]["self_bleu,none"] == pytest.approx(100.0)
    assert scores["qeval_temperature_summary"]["rougeL_gap,none"] == pytest.approx(0.0)
    hot = results["configs"]["qeval_temperature_1.0"]["generation_kwargs"]
    assert (hot["do_sample"], hot["temperature"], hot["top_k"]) == (True, 1.0, 0)
    assert hot["max_new_tokens"] == 12
    greedy = results["configs"]["qeval_temperature_0.0"]["generation_kwargs"]
    assert (greedy["do_sample"], greedy["temperature"]) == (False, 0.0)
    logged = results["config"]["qeval"]["sampling"]["settings"]
    assert {(s["temperature"], s["do_sample"]) for s in logged} >= {(0.0, False), (1.0, True)}
    assert {s["max_new_tokens"] for s in logged} == {12}


@pytest.mark.slow
def test_quantized_reuses_the_cached_reference(tasks_dir):
    args = ["qeval_top_k_1", "qeval_top_k_all"]
    first = sampling_run(tasks_dir, "pretrained=qeval-tiny,quantizer=rtn,bits=2", args)
    again = sampling_run(tasks_dir, "pretrained=qeval-tiny,quantizer=bnb-nf4", args)
    assert first["config"]["qeval"]["sampling"]["reference_cache"]["reused"] is False
    assert again["config"]["qeval"]["sampling"]["reference_cache"]["reused"] is True
    assert first["results"]["qeval_top_k_1"]["agree_tokens,none"] < 1.0  # 2-bit drifts


@pytest.mark.slow
def test_through_the_stock_cli(tasks_dir, tmp_path):
    result = run_cli(
        [
            "lm_eval",
            *lm_eval_args(
                "pretrained=qeval-tiny,quantizer=rtn,bits=4",
                "qeval_max_new_tokens_16",
                tasks_dir,
                *("--limit", "2", "--output_path", str(tmp_path / "o"), "--log_samples"),
            ),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "o").rglob("results_*.json")
    data = json.loads(results_file.read_text())
    assert 0.0 <= data["results"]["qeval_max_new_tokens_16"]["rougeL,none"] <= 1.0
    [samples_file] = (tmp_path / "o").rglob("samples_qeval_max_new_tokens_16_*.jsonl")
    sample = json.loads(samples_file.read_text().splitlines()[0])
    assert len(sample["resps"][0]) == 4  # repeats: 4 samples per prompt
    assert sample["arguments"]["gen_args_0"]["arg_1"]["max_new_tokens"] == 16


@pytest.mark.slow
def test_fluency_under_the_unquantized_model_is_optional(tasks_dir):
    plain = sampling_run(
        tasks_dir, "pretrained=qeval-tiny,quantizer=rtn,bits=3", ["qeval_temperature_0.8"]
    )
    assert "fluency,none" not in plain["results"]["qeval_temperature_0.8"]
    scored = sampling_run(
        tasks_dir,
        "pretrained=qeval-tiny,quantizer=rtn,bits=3",
        ["qeval_temperature_0.8"],
        fluency=True,
    )
    fluency = scored["results"]["qeval_temperature_0.8"]["fluency,none"]
    assert -10.0 < fluency < 0.0  # mean log-probability per token, nats


def test_top_k_slope_is_over_the_finite_settings(tasks_dir):
    """top_k 0 means unrestricted: beyond every finite k, not at k = 0, so not in the slope."""
    from lm_eval.tasks import TaskManager

    from qeval_plugins.metrics.text import slope

    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    task = manager.load_task_or_group(["qeval_top_k_summary"])["qeval_top_k_summary"]
    task.prepare()
    assert task.values == [1, 10, 40, 100, 0]
    quantized = [0.1, 0.2, 0.3, 0.4, 0.9]  # mean ROUGE-L per setting, "all" last
    docs = [[(q, 0.5) for q in quantized]] * 3
    assert task._rougeL_slope(docs) == pytest.approx(slope([1, 10, 40, 100], quantized[:4]))
    assert task._rougeL_spread(docs) == pytest.approx(0.8)  # "all" still counts here
