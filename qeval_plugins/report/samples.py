"""Per-document scores from lm-eval's ``--log_samples`` files, read defensively, and paired.

lm-eval writes ``samples_<task>_<date>.jsonl`` next to ``results_<date>.json`` (the same date);
``qeval run`` moves them next to its ``results.json``. Each line is one document under one filter:
``doc_id``, ``doc_hash`` (newer lm-eval), ``filter`` and the document's value of each metric
(``"acc": 1.0``). A run's samples of a task are the file of its results file's date, else (a
``results.json``) the newest one; for a run merged from several files, the first file's folder
that has them, newest first.

A metric is paired (:mod:`.paired`) only when, in both runs, every document's value is a finite
number whose mean is the results file's value (so the metric is a mean over documents and the
samples belong to those results), and both runs scored the same documents: the same ``doc_id``
set and either a ``doc_hash`` on every document of both runs, equal for each (paired by document
hash), or no ``doc_hash`` in either run (paired by position: documents of the same count and
order, lm-eval's ``doc_id``, whose contents — the ``doc`` object, ``prompt_hash`` and
``target_hash`` of each line, where both runs' lines carry them — agree at every position).
Hashes in one run's samples only (another lm-eval version, or a file edited) cannot show the
documents are the same: one warning naming the task and both runs, and
the screen. Metrics whose per-document values are not numbers
(perplexities, BLEU, F1: pairs and lists aggregated otherwise) are silently left to the
unpaired screen. Anything else amiss — a file too large, a line over :data:`MAX_LINE_BYTES`,
text that is not UTF-8 or not JSON, a truncated file, a doc_id given twice, a value that is not
finite, documents that differ, means that disagree — is one warning line, and the screen is used.
Files are read line by line and each file at most once per report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from qeval_plugins.core.safe_read import RefusedFile, open_regular, size_text
from qeval_plugins.report.paired import Paired, paired
from qeval_plugins.report.runs import Run

DATE = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"
SAMPLES_NAME = re.compile(rf"samples_(?P<task>.+)_(?P<date>{DATE})\.jsonl")
RESULTS_NAME = re.compile(rf"results_(?P<date>{DATE})\.json")
MAX_FILE_BYTES = 1 << 30  # 1 GiB: a larger samples file is not read
MAX_LINE_BYTES = 16 << 20  # 16 MiB per document line
MAX_LINES = 2_000_000
MAX_HASH_CHARS = 128
MAX_DOC_ID = 2**53
MEAN_TOLERANCE = 1e-9  # |mean − results value| ≤ tolerance · max(1, |value|)
BY_HASH = "doc_hash"  # documents matched by lm-eval's doc_hash, equal in both runs
BY_POSITION = "position"  # neither run's samples carry hashes: matched by doc_id


class SamplesProblem(Exception):
    """A samples file that cannot be paired; its message is the warning's reason."""


class Unmatchable(SamplesProblem):
    """Document hashes in one run's samples only: ``baseline_lacks`` says whose lack them."""

    def __init__(self, baseline_lacks: bool):
        super().__init__("document hashes in one run's samples only")
        self.baseline_lacks = baseline_lacks


class NotPerDocument(Exception):
    """A metric whose per-document values are not numbers (not a mean over documents)."""


@dataclass(frozen=True)
class DocScores:
    """One metric of one samples file: doc_id -> value, doc_id -> doc_hash where given, and
    doc_id -> content fingerprint (:func:`_fingerprint`) of lines that carry a document."""

    path: Path
    values: dict[int, float]
    hashes: dict[int, str]
    contents: dict[int, str] = field(default_factory=dict)


@dataclass
class SamplesReader:
    """Finds and reads samples files for one report, each folder listed and each file read at
    most once (errors remembered too)."""

    listings: dict[Path, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    read: dict[tuple[Path, str, str], DocScores | Exception] = field(default_factory=dict)

    def samples_path(self, run: Run, task: str) -> Path | None:
        """The samples file of ``task`` for ``run`` (module docstring), None when there is none."""
        for results in [run.path, *reversed(run.merged)]:
            found = self._listing(results.parent).get(task)
            if not found:
                continue
            dated = RESULTS_NAME.fullmatch(results.name)
            if dated:
                names = [name for date, name in found if date == dated["date"]]
                if names:
                    return results.parent / names[0]
                continue
            return results.parent / max(found)[1]
        return None

    def _listing(self, folder: Path) -> dict[str, list[tuple[str, str]]]:
        """Task -> [(date, file name)] of the samples files in ``folder`` (empty if unreadable)."""
        if folder not in self.listings:
            found: dict[str, list[tuple[str, str]]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        match = SAMPLES_NAME.fullmatch(entry.name)
                        if match:
                            found.setdefault(match["task"], []).append((match["date"], entry.name))
            except OSError:
                pass
            self.listings[folder] = found
        return self.listings[folder]

    def scores(self, path: Path, metric: str) -> DocScores:
        """``metric`` (``name`` or ``name,filter``) of every document in ``path``; raises
        :class:`SamplesProblem` or :class:`NotPerDocument` (remembered, raised again)."""
        name, _, kind = metric.partition(",")
        key = (path, name, kind or "none")
        if key not in self.read:
            try:
                self.read[key] = read_scores(path, name, kind or "none")
            except (SamplesProblem, NotPerDocument) as error:
                self.read[key] = error
        found = self.read[key]
        if isinstance(found, Exception):
            raise found
        return found


def read_scores(path: Path, metric: str, kind: str) -> DocScores:
    """The value of ``metric`` under filter ``kind`` of each document in the samples file
    ``path`` (a regular file: never a pipe or device), streamed line by line within
    :data:`MAX_FILE_BYTES`, :data:`MAX_LINE_BYTES` and :data:`MAX_LINES`; raises
    :class:`SamplesProblem` (the reason) or :class:`NotPerDocument`."""
    values: dict[int, float] = {}
    hashes: dict[int, str] = {}
    contents: dict[int, str] = {}
    try:
        # a regular file within the cap, checked on the open descriptor (no pipe, no device)
        with open_regular(path, MAX_FILE_BYTES) as handle:
            for number in range(1, MAX_LINES + 2):
                raw = handle.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                if number > MAX_LINES:
                    raise SamplesProblem(f"more than {MAX_LINES:,} lines")
                if len(raw) > MAX_LINE_BYTES:
                    raise SamplesProblem(f"line {number} is over {size_text(MAX_LINE_BYTES)}")
                if raw.strip():
                    data = _parse(raw, number)
                    _add_line(data, number, metric, kind, values, (hashes, contents))
    except RefusedFile as error:
        raise SamplesProblem(f"{error}; not read") from None
    except OSError as error:
        raise SamplesProblem(f"cannot be read ({error.strerror or error})") from None
    if not values:
        raise SamplesProblem(f"no documents under filter {kind!r}")
    return DocScores(path, values, hashes, contents)


def _fingerprint(data: dict) -> str | None:
    """SHA-256 of what a line says its document is: its ``doc`` object (canonical JSON),
    ``prompt_hash`` and ``target_hash``; None when the line carries none of them."""
    parts = {key: data[key] for key in ("doc", "prompt_hash", "target_hash") if key in data}
    if not parts:
        return None
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _parse(raw: bytes, number: int) -> dict:
    """One line as a JSON object; :class:`SamplesProblem` naming the line otherwise."""
    truncated = not raw.endswith(b"\n")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SamplesProblem(f"line {number} is not UTF-8 text") from None
    except RecursionError:
        raise SamplesProblem(f"line {number} is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or an integer too long to read
        what = "cut off (truncated file)" if truncated else "not valid JSON"
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)[:80]
        raise SamplesProblem(f"line {number} is {what}: {detail}") from None
    if not isinstance(data, dict):
        raise SamplesProblem(f"line {number} is not a JSON object")
    return data


def _add_line(
    data: dict, number: int, metric: str, kind: str, values: dict, about: tuple[dict, dict]
) -> None:
    """Check one document line and add its ``metric`` value (when under filter ``kind``), its
    doc_hash and content fingerprint to ``about`` = (hashes, contents)."""
    hashes, contents = about
    line_filter = data.get("filter", "none")
    if not isinstance(line_filter, str):
        raise SamplesProblem(f"line {number}: filter is not text")
    if line_filter != kind:
        return
    doc_id = data.get("doc_id")
    if type(doc_id) is not int or not 0 <= doc_id < MAX_DOC_ID:
        raise SamplesProblem(f"line {number}: doc_id is not a document number")
    if doc_id in values:
        raise SamplesProblem(f"line {number}: doc_id {doc_id} appears twice")
    doc_hash = data.get("doc_hash")
    if doc_hash is not None:
        if not isinstance(doc_hash, str) or len(doc_hash) > MAX_HASH_CHARS:
            raise SamplesProblem(f"line {number}: doc_hash is not a hash")
        hashes[doc_id] = doc_hash
    value = data.get(metric)
    if value is None or isinstance(value, list | dict):
        raise NotPerDocument(metric)
    if type(value) not in (int, float):
        raise SamplesProblem(f"line {number}: {metric} is not a number")
    try:
        number_value = float(value)
    except OverflowError:  # an integer beyond 1.8e308
        number_value = math.inf
    if not math.isfinite(number_value):
        raise SamplesProblem(f"line {number}: {metric} is not finite")
    values[doc_id] = number_value
    fingerprint = _fingerprint(data)
    if fingerprint is not None:
        contents[doc_id] = fingerprint


def matched(base: DocScores, run: DocScores) -> tuple[list[float], list[float], str]:
    """Both runs' values in one document order and how they were matched: :data:`BY_HASH` (every
    document of both runs has a doc_hash, equal in both) or :data:`BY_POSITION` (neither run has
    any doc_hash: the same doc_ids, so the same count and order, and the same document contents at
    each position where both runs' lines carry them). :class:`Unmatchable` when only
    one run's documents all carry hashes; :class:`SamplesProblem` when the doc_id sets or hashes
    differ, or a run has hashes on some documents only."""
    if base.values.keys() != run.values.keys():
        only_base = len(base.values.keys() - run.values.keys())
        only_run = len(run.values.keys() - base.values.keys())
        raise SamplesProblem(
            f"documents differ from the baseline's ({only_run} only in this run, {only_base} "
            "only in the baseline: another --limit or dataset?)"
        )
    order = sorted(run.values)
    values = [base.values[i] for i in order], [run.values[i] for i in order]
    if not base.hashes and not run.hashes:
        shared = [i for i in order if i in base.contents and i in run.contents]
        moved = sum(1 for i in shared if base.contents[i] != run.contents[i])
        if moved:
            raise SamplesProblem(
                f"{moved} of {len(run.values)} documents differ from the baseline's at the same "
                "position (doc, prompt_hash, target_hash)"
            )
        return *values, BY_POSITION
    for scores, whose in ((run, "this run's"), (base, "the baseline's")):
        if scores.hashes and len(scores.hashes) < len(order):
            raise SamplesProblem(
                f"doc_hash on only {len(scores.hashes)} of {len(order)} documents of {whose} "
                "samples"
            )
    if not base.hashes or not run.hashes:
        raise Unmatchable(baseline_lacks=not base.hashes)
    changed = sum(1 for doc_id in order if base.hashes[doc_id] != run.hashes[doc_id])
    if changed:
        raise SamplesProblem(
            f"{changed} of {len(run.values)} documents differ from the baseline's (doc_hash)"
        )
    return *values, BY_HASH


def check_mean(scores: DocScores, value: float) -> None:
    """:class:`SamplesProblem` unless the mean of ``scores`` is the results file's ``value``
    (within :data:`MEAN_TOLERANCE`)."""
    try:
        mean = math.fsum(scores.values.values()) / len(scores.values)
    except OverflowError:
        raise SamplesProblem("per-document values too large to average") from None
    if abs(mean - value) > MEAN_TOLERANCE * max(1.0, abs(value)):
        raise SamplesProblem(
            f"per-document values average {mean:.6g}, the results file says {value:.6g} (not a "
            "mean over documents, or samples of another evaluation)"
        )


def paired_metric(
    reader: SamplesReader, base: Run, run: Run, task: str, metric: str
) -> tuple[Paired | None, str | None]:
    """The paired statistics of ``task``'s ``metric``, ``run`` against ``base``:
    ``(Paired, None)`` (its ``pairing`` says how the documents were matched); ``(None, None)``
    when either run has no samples of it or its values are not per-document numbers;
    ``(None, warning)`` when samples exist but cannot be paired."""
    base_path, run_path = reader.samples_path(base, task), reader.samples_path(run, task)
    if base_path is None or run_path is None:
        return None, None
    try:
        base_scores = _checked(reader, base_path, base, task, metric)
        run_scores = _checked(reader, run_path, run, task, metric)
        base_values, run_values, pairing = _matched(
            base_scores, run_scores, f"{run_path}: {task}/{metric}"
        )
        return replace(paired(base_values, run_values), pairing=pairing), None
    except NotPerDocument:
        return None, None
    except Unmatchable as error:
        return None, _unmatchable(task, base, run, error.baseline_lacks)
    except SamplesProblem as error:
        return None, f"{error}; unpaired screen used"
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as error:
        # the net under the checks: content of a shape no check foresaw
        problem = f"{type(error).__name__}: {error}"[:200]
        where = f"{run_path}: {task}/{metric}"
        return None, f"{where}: unexpected content ({problem}); unpaired screen used"


def _unmatchable(task: str, base: Run, run: Run, baseline_lacks: bool) -> str:
    """The warning for samples of which only one run's carry document hashes: the task and both
    runs by label, and which lacks them."""
    without, with_hashes = (base, run) if baseline_lacks else (run, base)
    return (
        f"{task}: cannot pair {run.label} with the baseline {base.label}: the samples of "
        f"{with_hashes.label} carry document hashes (doc_hash) and those of {without.label} do "
        "not (another lm-eval version?), so the documents cannot be shown to be the same; "
        "unpaired screen used"
    )


def _matched(base: DocScores, run: DocScores, where: str) -> tuple[list[float], list[float], str]:
    """:func:`matched`, their differences finite; a :class:`SamplesProblem` starts ``where``
    (:class:`Unmatchable` passes unchanged)."""
    try:
        base_values, run_values, pairing = matched(base, run)
        if not all(math.isfinite(q - b) for b, q in zip(base_values, run_values, strict=True)):
            raise SamplesProblem("differences from the baseline too large for a float")
    except Unmatchable:
        raise
    except SamplesProblem as error:
        raise SamplesProblem(f"{where}: {error}") from None
    return base_values, run_values, pairing


def _checked(reader: SamplesReader, path: Path, run: Run, task: str, metric: str) -> DocScores:
    """``run``'s scores of ``task``'s ``metric`` from ``path``, their mean checked against the
    results; a :class:`SamplesProblem` names the file and the metric."""
    try:
        scores = reader.scores(path, metric)
        check_mean(scores, run.metrics[task][metric].value)
    except SamplesProblem as error:
        raise SamplesProblem(f"{path}: {task}/{metric}: {error}") from None
    return scores
