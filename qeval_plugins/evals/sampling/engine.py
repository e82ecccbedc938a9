"""The engine of the sampling-sensitivity tasks: matched generations of quantized and reference.

Each ``qeval_sample`` request is a prompt plus generation settings; lm-eval repeats it once per
sample (the task's ``repeats``). For every distinct (prompt, settings) the quantized model and
the unquantized reference generate the same number of samples with the same seed, so the two are
compared under matched sampling. The reference's generations are cached on disk (see
:mod:`qeval_plugins.storage.reference_cache`) and reused by runs of other quantizers; identical
requests from several tasks in one run (a setting's own task and the sweep summary) are generated
once.

Settings reach ``generate`` as a fresh ``GenerationConfig`` built only from them, so a model's own
generation defaults (top_p, repetition penalty, ...) never leak in: temperature 0 is greedy
(``do_sample=False``), otherwise multinomial sampling with ``temperature``, ``top_k`` (0 = no
top-k filtering) and ``top_p = 1``. The seed of a (prompt, settings) pair is
``seed + crc32(prompt) mod 2**31``; ``torch.manual_seed`` is set to it right before generating.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

from qeval_plugins.backend.requests import register_request_handler
from qeval_plugins.core.errors import QevalError

REQUEST_TYPE = "qeval_sample"


@dataclass(frozen=True)
class GenerationSettings:
    """One point of a sweep. temperature 0 means greedy decoding; top_k 0 means unrestricted."""

    temperature: float = 0.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 1234

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> GenerationSettings:
        try:
            settings = cls(
                temperature=float(values.get("temperature", cls.temperature)),
                top_k=int(values.get("top_k", cls.top_k)),
                max_new_tokens=int(values.get("max_new_tokens", cls.max_new_tokens)),
                seed=int(values.get("seed", cls.seed)),
            )
        except (TypeError, ValueError) as error:
            raise QevalError(f"bad sampling setting: {error}; use numbers.") from error
        if settings.temperature < 0 or settings.top_k < 0 or settings.max_new_tokens < 1:
            raise QevalError(
                f"sampling settings out of range: {asdict(settings)}; need temperature >= 0, "
                f"top_k >= 0, max_new_tokens >= 1."
            )
        return settings

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def generation_config(self, pad_token_id: int | None, eos_token_id: Any, count: int = 1) -> Any:
        """The exact ``GenerationConfig`` used (nothing inherited from the model's defaults)."""
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
        }
        if not self.do_sample:
            return GenerationConfig(do_sample=False, num_beams=1, **common)
        return GenerationConfig(
            do_sample=True,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=1.0,
            num_return_sequences=count,
            **common,
        )

    def seed_for(self, prompt: str) -> int:
        return (self.seed + zlib.crc32(prompt.encode())) % 2**31

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "do_sample": self.do_sample}


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    prompt_ids: list[int],
    settings: GenerationSettings,
    count: int,
) -> list[list[int]]:
    """``count`` continuations (new token ids) of one prompt, seeded as the module says."""
    device = next(model.parameters()).device
    inputs = torch.tensor([prompt_ids], device=device)
    config = settings.generation_config(tokenizer.pad_token_id, tokenizer.eos_token_id, count)
    torch.manual_seed(settings.seed_for(prompt))
    with torch.no_grad():
        if settings.do_sample:
            outputs = model.generate(
                inputs, attention_mask=torch.ones_like(inputs), generation_config=config
            )
        else:  # greedy has no num_return_sequences; every sample is generated for real
            outputs = torch.cat(
                [
                    model.generate(
                        inputs, attention_mask=torch.ones_like(inputs), generation_config=config
                    )
                    for _ in range(count)
                ]
            )
    return [_strip(row[len(prompt_ids) :].tolist(), tokenizer) for row in outputs]


def _strip(ids: list[int], tokenizer: Any) -> list[int]:
    """Drop everything from the first EOS/pad token on."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    for position, token in enumerate(ids):
        if token in stops:
            return ids[:position]
    return ids


def run(lm: Any, requests: list) -> list[dict[str, Any]]:
    """Answer ``qeval_sample`` requests: one sample per (repeated) request, matched reference."""
    from qeval_plugins.storage import reference_cache

    lm.require_reference()
    repeats = Counter(id(request) for request in requests)
    order: dict[int, tuple] = {}
    jobs: dict[tuple, int] = {}
    for request in requests:
        key = (request.args[0], GenerationSettings.from_mapping(request.args[1]))
        order.setdefault(id(request), key)
        jobs[key] = max(jobs.get(key, 0), repeats[id(request)])
    encoded = {key: lm.tok_encode(key[0]) for key in jobs}
    checkpoint = lm.reference_dir()
    dtype = lm.dtype_name
    cache_key = reference_cache.reference_key(
        reference_cache.checkpoint_identity(checkpoint),
        [encoded[key] for key in jobs],
        {"kind": "sampling", "jobs": [[asdict(key[1]), count] for key, count in jobs.items()]},
        dtype,
    )
    counts = list(jobs.values())
    cached = reference_cache.load(cache_key, check=lambda found: check_samples(found, counts))
    reused = cached is not None
    if cached is None:
        cached = lm.on_reference_model(
            lambda model: {
                "samples": [
                    generate(model, lm.tokenizer, key[0], encoded[key], key[1], count)
                    for key, count in jobs.items()
                ]
            }
        )
        meta = {
            "kind": "qeval_sampling",
            "model": lm.reference_name,
            "settings": {"prompts": len(jobs), "samples": sum(counts)},
            "dtype": dtype,
        }
        reference_cache.save(cache_key, cached, meta=meta)
    reference = dict(zip(jobs, cached["samples"], strict=True))
    quantized = {
        key: generate(lm.model, lm.tokenizer, key[0], encoded[key], key[1], count)
        for key, count in jobs.items()
    }
    lm.record(
        "sampling",
        {
            "settings": [settings.record() for settings in dict.fromkeys(key[1] for key in jobs)],
            "samples_per_prompt": max(jobs.values()),
            "reference_cache": {"key": cache_key, "reused": reused},
        },
    )
    fluency = None
    if any(len(r.args) > 2 and r.args[2].get("fluency") for r in requests):
        fluency = lm.on_reference_model(
            lambda model: {
                key: [mean_logprob(model, encoded[key], sample) for sample in samples]
                for key, samples in quantized.items()
            }
        )
    responses, seen = [], {}
    for request in requests:
        key = order[id(request)]
        index = seen[id(request)] = seen.get(id(request), -1) + 1
        tokens, ref_tokens = quantized[key][index], reference[key][index]
        response = {
            "text": lm.tok_decode(tokens),
            "tokens": tokens,
            "reference_text": lm.tok_decode(ref_tokens),
            "reference_tokens": ref_tokens,
            "settings": key[1].record(),
        }
        if fluency is not None:
            response["fluency"] = fluency[key][index]
        responses.append(response)
    return responses


def check_samples(cached: Any, counts: list[int]) -> None:
    """Raise ValueError unless ``cached`` is ``{"samples": [...]}`` holding, for the i-th
    (prompt, settings) job, ``counts[i]`` lists of token ids (ints >= 0), as :func:`run` caches."""
    samples = cached.get("samples") if isinstance(cached, dict) else None
    if not isinstance(samples, list) or len(samples) != len(counts):
        raise ValueError(f"expected 'samples' for {len(counts)} prompts")
    for job, (found, count) in enumerate(zip(samples, counts, strict=True)):
        if not isinstance(found, list) or len(found) != count:
            raise ValueError(f"prompt {job}: expected {count} samples")
        for sample in found:
            if not isinstance(sample, list) or not all(
                isinstance(token, int) and token >= 0 for token in sample
            ):
                raise ValueError(f"prompt {job}: a sample is not a list of token ids")


def mean_logprob(model: Any, prompt_ids: list[int], continuation: list[int]) -> float | None:
    """Mean log-probability per token (nats) of ``continuation`` after the prompt, under ``model``.

    None for an empty continuation.
    """
    if not continuation:
        return None
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + continuation], device=device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].double()
    targets = ids[0, len(prompt_ids) :]
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])
    return float(logprobs.mean())


register_request_handler(REQUEST_TYPE, run)
