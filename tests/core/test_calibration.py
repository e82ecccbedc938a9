"""Calibration data: the bundled passages, user files, the windows and what is recorded."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from transformers import AutoTokenizer

from qeval_plugins import CALIBRATION_OPTIONS, Quantizer
from qeval_plugins.core.calibration import BUNDLED_PATH, build_calibration, read_passages
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.quantizer import contract_problems
from qeval_plugins.paths import tasks_path

DEFAULTS = {option.name: option.default for option in CALIBRATION_OPTIONS}


@pytest.fixture(scope="module")
def tokenizer():
    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    return AutoTokenizer.from_pretrained(EMBEDDED_MODELS["qeval-tiny"])


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_the_bundled_passages_are_not_the_evaluation_passages():
    """Calibrating on what qeval_sqnr evaluates would flatter every calibrated method."""
    passages, source, digest = read_passages("bundled")
    assert source == "bundled" and len(passages) == 48
    assert digest == hashlib.sha256(BUNDLED_PATH.read_bytes()).hexdigest()
    lines = (tasks_path() / "qeval_sqnr" / "passages.jsonl").read_text().splitlines()
    evaluation = [json.loads(line)["text"] for line in lines]

    def grams(text: str) -> set[tuple[str, ...]]:
        tokens = words(text)
        return {tuple(tokens[i : i + 6]) for i in range(len(tokens) - 5)}

    shared = set().union(*map(grams, passages)) & set().union(*map(grams, evaluation))
    assert shared == set()


def test_windows_are_seeded_slices_of_the_token_stream(tokenizer):
    options = {**DEFAULTS, "calibration_samples": 8, "calibration_seqlen": 32}
    found = build_calibration(tokenizer, options)
    assert tuple(found.input_ids.shape) == (8, 32)
    stream = []
    for passage in found.texts:
        stream += tokenizer(passage, add_special_tokens=False)["input_ids"]
        stream.append(tokenizer.eos_token_id)
    assert found.stream_tokens == len(stream)
    text = " " + " ".join(map(str, stream)) + " "
    for window in found.input_ids.tolist():  # each window occurs in the stream as it is
        assert " " + " ".join(map(str, window)) + " " in text
    expected = hashlib.sha256(found.input_ids.numpy().astype("<i8").tobytes()).hexdigest()
    assert found.tokens_sha256 == expected
    again = build_calibration(tokenizer, options)
    other = build_calibration(tokenizer, {**options, "calibration_seed": 1})
    assert again.tokens_sha256 == found.tokens_sha256 != other.tokens_sha256
    assert found.record() == {
        "source": "bundled",
        "file_sha256": found.file_sha256,
        "tokens_sha256": found.tokens_sha256,
        "samples": 8,
        "seqlen": 32,
        "seed": 0,
        "passages": 48,
        "stream_tokens": len(stream),
    }


def test_user_files(tmp_path, tokenizer):
    text = tmp_path / "corpus.txt"
    text.write_text("First passage,\nstill the first.\n\n\nSecond passage.\r\n\r\nThird.\n")
    passages, source, _ = read_passages(str(text))
    assert passages == ["First passage, still the first.", "Second passage.", "Third."]
    assert source == str(text.resolve())
    lines = tmp_path / "corpus.jsonl"
    lines.write_text('{"text": "one"}\n\n{"text": "two", "id": 2}\n{"text": "  "}\n')
    assert read_passages(str(lines))[0] == ["one", "two"]
    recorded = build_calibration(
        tokenizer,
        {
            **DEFAULTS,
            "calibration_file": str(text),
            "calibration_samples": 2,
            "calibration_seqlen": 8,
        },
    ).record()
    assert recorded["source"] == str(text.resolve()) and recorded["passages"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", "is not UTF-8 text"),
        (b"\n\n  \n", "holds no text"),
        (b'{"text": 1}\n', 'line 1 is not a JSON object with a "text" string'),
        (b"[1, 2]\n", 'line 1 is not a JSON object with a "text" string'),
        (b"[" * 100_000 + b"\n", 'line 1 is not a JSON object with a "text" string'),
    ],
)
def test_hostile_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(QevalError, match=re.escape(message)) as error:
        read_passages(str(path))
    assert "\n" not in str(error.value)


def test_a_calibrated_quantizer_must_declare_the_calibration_options():
    class Forgetful(Quantizer):
        name = "forgetful"
        description = "calibrates but declares no calibration options"
        calibrated = True

    class Complete(Forgetful):
        name = "complete"
        options = CALIBRATION_OPTIONS

    [problem] = contract_problems(Forgetful())
    assert "missing calibration_file, calibration_samples" in problem
    assert contract_problems(Complete()) == []
