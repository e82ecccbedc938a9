"""Calibration data for quantizers that need it (GPTQ and the like), owned by qeval.

qeval, not the quantizer, chooses and records the texts, so a calibrated run is reproducible and
two methods compared in a sweep see the same tokens. A quantizer that calibrates sets
``calibrated = True`` and declares :data:`CALIBRATION_OPTIONS` among its options; the backend then
builds a :class:`CalibrationSet` before ``quantize()`` and passes it as ``context.calibration``.

Sources: the bundled passages (``qeval_plugins/data/calibration.jsonl``: plain English prose
written for qeval, apart from the ``qeval_sqnr`` evaluation passages, so no run calibrates on
what it is evaluated on), or ``calibration_file=PATH``: a ``.jsonl`` file of ``{"text": ...}``
objects, or any other file read as UTF-8 text with passages separated by blank lines.

Sampling (as in the GPTQ paper): the passages are tokenized without special tokens, joined into
one stream with the end-of-text token between them, and ``calibration_samples`` windows of
``calibration_seqlen`` tokens start at offsets drawn uniformly with ``calibration_seed``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.options import Option
from qeval_plugins.core.safe_read import read_regular

BUNDLED_PATH = Path(__file__).resolve().parent.parent / "data" / "calibration.jsonl"
BUNDLED_SOURCE = "bundled"
MAX_CALIBRATION_BYTES = 1 << 30  # 1 GiB of text, far more than any calibration set holds

CALIBRATION_OPTIONS = (
    Option(
        "calibration_file",
        str,
        BUNDLED_SOURCE,
        "calibration texts: 'bundled' (qeval's English passages), or a .jsonl file of "
        '{"text": ...} lines or a text file of blank-line-separated passages',
    ),
    Option("calibration_samples", int, 128, "calibration windows", minimum=1, maximum=100_000),
    Option("calibration_seqlen", int, 512, "tokens per calibration window", minimum=8),
    Option("calibration_seed", int, 0, "seed of the window offsets", minimum=0),
)
CALIBRATION_OPTION_NAMES = tuple(option.name for option in CALIBRATION_OPTIONS)


@dataclass(frozen=True)
class CalibrationSet:
    """The token windows a calibrating quantizer runs through the model.

    ``input_ids``: ``samples`` × ``seqlen`` token ids (a ``torch.long`` tensor, CPU); ``texts``:
    the passages the stream was made of. ``source`` is ``bundled`` or the file's resolved path;
    ``file_sha256`` hashes the source file's bytes, ``tokens_sha256`` the windows' token ids (so it
    changes with the tokenizer, the sampling options and the file).
    """

    source: str
    file_sha256: str
    tokens_sha256: str
    samples: int
    seqlen: int
    seed: int
    stream_tokens: int
    texts: tuple[str, ...]
    input_ids: Any

    def record(self) -> dict[str, Any]:
        """The results' ``qeval.calibration`` block."""
        return {
            "source": self.source,
            "file_sha256": self.file_sha256,
            "tokens_sha256": self.tokens_sha256,
            "samples": self.samples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "passages": len(self.texts),
            "stream_tokens": self.stream_tokens,
        }


def read_passages(source: str) -> tuple[list[str], str, str]:
    """(passages, resolved source, SHA-256 of the file's bytes) of ``bundled`` or a file path.

    A file that is missing, not UTF-8, holds a malformed ``.jsonl`` line or no text at all is a
    one-line QevalError naming the file (and the line).
    """
    path = BUNDLED_PATH if source == BUNDLED_SOURCE else Path(source).expanduser()
    shown = BUNDLED_SOURCE if source == BUNDLED_SOURCE else str(path.resolve())
    try:
        data = read_regular(path, MAX_CALIBRATION_BYTES)  # never a FIFO or a device
        text = data.decode("utf-8")
    except OSError as error:
        raise QevalError(
            f"calibration_file {source}: cannot be read ({error.strerror or error}); give an "
            f"existing text or .jsonl file, or calibration_file={BUNDLED_SOURCE}."
        ) from None
    except UnicodeDecodeError:
        raise QevalError(f"calibration_file {source}: is not UTF-8 text.") from None
    passages = _jsonl_passages(text, source) if path.suffix == ".jsonl" else _text_passages(text)
    if not passages:
        raise QevalError(f"calibration_file {source}: holds no text to calibrate on.")
    return passages, shown, hashlib.sha256(data).hexdigest()


def _text_passages(text: str) -> list[str]:
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [" ".join(block.split()) for block in blocks if block.strip()]


def _jsonl_passages(text: str, source: str) -> list[str]:
    passages = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            item = None
        value = item.get("text") if isinstance(item, dict) else None
        if not isinstance(value, str):
            raise QevalError(
                f'calibration_file {source}: line {number} is not a JSON object with a "text" '
                f'string; write one {{"text": ...}} object per line.'
            )
        if value.strip():
            passages.append(value)
    return passages


def build_calibration(tokenizer: Any, options: dict[str, Any]) -> CalibrationSet:
    """The :class:`CalibrationSet` that ``options`` (:data:`CALIBRATION_OPTIONS`) select."""
    import torch

    passages, source, file_sha256 = read_passages(options["calibration_file"])
    samples, seqlen = options["calibration_samples"], options["calibration_seqlen"]
    seed = options["calibration_seed"]
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for passage in passages:
        stream += (
            tokenizer(passage, add_special_tokens=False, verbose=False)["input_ids"] + separator
        )
    if len(stream) < seqlen:
        raise QevalError(
            f"calibration_file {options['calibration_file']}: its {len(stream)} tokens are fewer "
            f"than calibration_seqlen={seqlen}; lower calibration_seqlen or give more text."
        )
    tokens = torch.tensor(stream, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen + 1, (samples,), generator=generator)
    windows = torch.stack([tokens[start : start + seqlen] for start in starts.tolist()])
    return CalibrationSet(
        source=source,
        file_sha256=file_sha256,
        tokens_sha256=hashlib.sha256(windows.numpy().astype("<i8").tobytes()).hexdigest(),
        samples=samples,
        seqlen=seqlen,
        seed=seed,
        stream_tokens=len(stream),
        texts=tuple(passages),
        input_ids=windows,
    )


def random_windows(vocab_size: int, samples: int, seqlen: int, seed: int = 0) -> CalibrationSet:
    """``samples`` × ``seqlen`` uniform random token ids: calibration for benchmarks on random-init
    models, which have no tokenizer and no language to calibrate on (source ``random``)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, vocab_size, (samples, seqlen), generator=generator)
    return CalibrationSet(
        source="random",
        file_sha256="",
        tokens_sha256=hashlib.sha256(windows.numpy().astype("<i8").tobytes()).hexdigest(),
        samples=samples,
        seqlen=seqlen,
        seed=seed,
        stream_tokens=windows.numel(),
        texts=(),
        input_ids=windows,
    )
