"""The numeric lm-eval options ``qeval run`` passes on are checked before any run, each bad value
one line: today lm-eval's own types take ``--num_fewshot -1`` (while ``--limit -1`` is refused)
and the run fails later, or worse, runs."""

from __future__ import annotations

import argparse
import functools

import pytest
from conftest import run_cli

from qeval_plugins import QevalError
from qeval_plugins.sweep.settings import _lm_eval_run_parser, lm_eval_types, parse_lm_eval_args

REFUSED = {
    "num_fewshot": (["-1", "x", "1.5"], "must be a whole number >= 0"),
    "limit": (["0", "-1", "2.5", "nan", "inf", "many"], "must be a count of documents"),
    "batch_size": (["0", "-3", "auto:0", "auto:x", "8:2", "big"], "must be a whole number >= 1"),
    "max_batch_size": (["0", "-1", "x"], "must be a whole number >= 1"),
    "seed": (["-1", "4294967296", "x", "1,2", "1,2,3,4,5", "1,-2,3,4"], "each seed|1, 3 or 4"),
}
ACCEPTED = {
    "num_fewshot": [("0", 0), ("5", 5)],
    "limit": [("0.5", 0.5), ("20", 20.0), ("1", 1.0)],
    "batch_size": [("8", None), ("auto", None), ("auto:4", None)],  # not keyed
    "max_batch_size": [("64", None)],
    "seed": [("42", [42] * 4), ("0,None,8,52", [0, None, 8, 52]), ("1,2,3", [1, 2, 3, 1234])],
}


@pytest.mark.parametrize(
    "option, value",
    [(option, value) for option, (values, _) in REFUSED.items() for value in values],
)
def test_a_bad_number_is_one_line_naming_the_option(option, value):
    with pytest.raises(QevalError) as refused:
        parse_lm_eval_args([f"--{option}", value])
    message = str(refused.value)
    assert message.startswith(f"lm-eval option --{option}: ") and "\n" not in message
    assert f"got '{value}'" in message
    assert any(part in message for part in REFUSED[option][1].split("|"))


@pytest.mark.parametrize(
    "option, value, keyed",
    [(option, value, keyed) for option, pairs in ACCEPTED.items() for value, keyed in pairs],
)
def test_good_numbers_are_read_as_lm_eval_reads_them(option, value, keyed):
    assert parse_lm_eval_args([f"--{option}", value]).keyed.get(option) == keyed


def test_every_numeric_option_of_lm_evals_parser_is_checked():
    """A numeric option lm-eval adds (an int or float type, a list of ints, a size) fails this
    test until it has a type in qeval_plugins.core.arguments."""
    from lm_eval._cli.run import Run

    subcommands = argparse.ArgumentParser(prog="lm_eval").add_subparsers()
    Run.create(subcommands)
    numeric = {
        action.dest
        for action in subcommands.choices["run"]._actions
        if action.type in (int, float)
        or isinstance(action.type, functools.partial)
        or action.dest.endswith("size")
    }
    assert numeric == set(lm_eval_types()) == set(REFUSED)
    for action in _lm_eval_run_parser()._actions:  # qeval's check comes first
        if action.dest in numeric:
            with pytest.raises(argparse.ArgumentTypeError):
                action.type("-1")


def test_qeval_run_refuses_a_negative_few_shot_count_before_any_run(tmp_path):
    command = ["qeval", "run", "--model", "qeval-tiny", "--quantizers", "none", "--device", "cpu"]
    command += ["--tasks", "qeval_demo_facts", "--output", str(tmp_path / "runs")]
    refused = run_cli([*command, "--num_fewshot", "-1"], timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        "qeval: error: lm-eval option --num_fewshot: must be a whole number >= 0, got '-1' "
        "(see 'lm_eval run --help').\n"
    )
    assert not (tmp_path / "runs").exists()
