"""Xu et al.'s loss-landscape features: the model's NLL under isotropic Gaussian weight noise.

For every linear layer ℓ the quantization changes, noise N(0, σ_ℓ²) is added to each weight with

    σ_ℓ = ‖W_ℓ‖ / √n_ℓ · 10^(−SQNR_ℓ / 20)

(n_ℓ weights, ‖·‖ the Frobenius norm), so the noise has the layer's signal-to-noise ratio
SQNR_ℓ in dB: its energy n_ℓ σ_ℓ² is ‖W_ℓ‖² · 10^(−SQNR_ℓ/10). With SQNR_ℓ the RTN twin's own
per-layer SQNR this is the *noise-equivalent* NLL of a format; with one SQNR for every layer
(:data:`RADII_DB`: 20 and 10 dB) it probes the landscape's flatness at fixed radii, a property
of the model alone. Noise is drawn on the CPU from one generator seeded with ``seed``, layer by
layer in module order, so a draw is the same on every device.

The NLL is the mean negative log-likelihood in nats per predicted token of a short pass: the
first :data:`PASS_TEXTS` texts of the ``qeval_sqnr`` passages (or the runs' ``text_file``), each
cut to :data:`PASS_TOKENS` tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.safe_read import read_regular

PASS_TEXTS = 16
PASS_TOKENS = 128
RADII_DB = (20.0, 10.0)
NOISE_SEED = 0
MAX_TEXT_FILE_BYTES = 64 << 20


def bundled_passages() -> Path:
    """``qeval_sqnr``'s bundled passages (``tasks/qeval_sqnr/passages.jsonl``)."""
    from qeval_plugins.paths import tasks_path

    return tasks_path() / "qeval_sqnr" / "passages.jsonl"


def read_texts(text_file: str | None = None, text_field: str = "text") -> list[str]:
    """The first :data:`PASS_TEXTS` texts of ``text_file`` (JSON Lines with ``text_field``, or
    passages separated by blank lines), the bundled passages when None, as ``qeval_sqnr``
    reads them."""
    path = Path(text_file).expanduser() if text_file else bundled_passages()
    try:
        raw = read_regular(path, MAX_TEXT_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QevalError(f"texts for the noise passes: cannot read {path} ({error})") from None
    if path.suffix == ".jsonl":
        try:
            texts = [str(json.loads(line)[text_field]) for line in raw.splitlines() if line.strip()]
        except (ValueError, KeyError, TypeError) as error:
            raise QevalError(
                f"texts for the noise passes: {path} is not JSON Lines with a '{text_field}' "
                f"field ({type(error).__name__})"
            ) from None
    else:
        texts = [block.strip() for block in raw.split("\n\n") if block.strip()]
    if not texts:
        raise QevalError(f"texts for the noise passes: {path} holds no text")
    return texts[:PASS_TEXTS]


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 (hex) of the texts and the pass settings: a cache key part."""
    header = json.dumps({"texts": list(texts), "tokens": PASS_TOKENS}, sort_keys=True)
    return hashlib.sha256(header.encode()).hexdigest()


def token_ids(tokenizer: Any, texts: Iterable[str]) -> list[list[int]]:
    """Each text's token ids (the tokenizer's special tokens included), cut to
    :data:`PASS_TOKENS`; texts of fewer than two tokens are left out."""
    ids = [list(tokenizer(text)["input_ids"])[:PASS_TOKENS] for text in texts]
    return [row for row in ids if len(row) >= 2]


def mean_nll(model: Any, ids: Sequence[Sequence[int]]) -> float:
    """Mean NLL (nats per predicted token) of ``model`` over the texts ``ids``, texts of one
    length run as one batch; float64 sums."""
    import torch

    device = next(model.parameters()).device
    by_length: dict[int, list[Sequence[int]]] = {}
    for row in ids:
        by_length.setdefault(len(row), []).append(row)
    total, count = 0.0, 0
    with torch.no_grad():
        for length, rows in by_length.items():
            tokens = torch.tensor([list(row) for row in rows], device=device)
            logprobs = torch.log_softmax(model(tokens).logits[:, :-1].float(), dim=-1)
            picked = logprobs.gather(2, tokens[:, 1:, None]).squeeze(2)
            total -= float(picked.double().sum())
            count += len(rows) * (length - 1)
    if not count:
        raise QevalError("the noise passes have no text of two tokens or more")
    return total / count


def noise_sigma(weight: Any, sqnr_db: float) -> float:
    """σ = ‖W‖ / √n · 10^(−SQNR/20): the noise standard deviation of SQNR ``sqnr_db`` dB."""
    import math

    energy = float(weight.detach().double().pow(2).sum())
    return math.sqrt(energy / weight.numel()) * 10.0 ** (-sqnr_db / 20.0)


def noisy_nll(
    model: Any,
    layers: Sequence[tuple[str, Any]],
    sqnr_db: dict[str, float],
    ids: Sequence[Sequence[int]],
    seed: int = NOISE_SEED,
) -> float:
    """:func:`mean_nll` with noise of ``sqnr_db[name]`` dB added to each layer's weight (layers
    missing from ``sqnr_db`` keep theirs); the weights are restored afterwards. Holds a copy of
    the noised weights while it runs."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    saved = {}
    try:
        with torch.no_grad():
            for name, module in layers:
                if name not in sqnr_db:
                    continue
                weight = module.weight
                sigma = noise_sigma(weight, sqnr_db[name])
                noise = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
                saved[name] = weight.data.clone()
                weight.data = (weight.data.float() + sigma * noise.to(weight.device)).to(
                    weight.dtype
                )
        return mean_nll(model, ids)
    finally:
        modules = dict(layers)
        for name, original in saved.items():
            modules[name].weight.data = original
