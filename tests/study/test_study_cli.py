"""``qeval study``'s input checks: each mistake is one line before anything is trained or run."""

from __future__ import annotations

import pytest

from qeval_plugins.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "xs,q"], "unknown --sizes 'q'; choose from xs, s, m, l."),
        (["--sizes", "xs,m"], "--sizes must include s: the recipes are compared at size s."),
        (["--seeds", "1,a"], "--seeds takes whole numbers separated by commas, got 'a'."),
        (["--seeds", "1,1"], "--seeds must name at least one seed, each once."),
        (["--device", "tpu"], "--device must be cpu or cuda, got 'tpu'."),
        (["--quantizers", "frob"], "unknown quantizer 'frob'."),
        (["--models", "/nonexistent"], "--models: '/nonexistent' is no model folder;"),
        (["--models", "org/m", "--steps", "9"], "--steps sets the family's training; with"),
    ],
)
def test_a_bad_setting_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QEVAL_DEBUG", raising=False)
    code = main(["study", "--output", str(tmp_path / "out"), *argv])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"qeval: error: {message}")
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "report.md"
    target.write_text("x")
    assert main(["study", "--output", str(target)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_the_help_names_the_trainers_default_step_count(capsys):
    from qeval_plugins.study.training import DEFAULT_STEPS

    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert f"(default {DEFAULT_STEPS})" in " ".join(capsys.readouterr().out.split())


def test_report_only_without_runs_is_one_line(tmp_path, capsys):
    code = main(["study", "--output", str(tmp_path / "empty"), "--report-only"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"qeval: error: --report-only: no runs in {tmp_path / 'empty' / 'runs'}; run 'qeval "
        "study' (without --report-only) first, with the same --output.\n"
    )
    assert not (tmp_path / "empty" / "README.md").exists()


def test_family_sizes_are_put_smallest_first():
    from qeval_plugins.cli.study import smallest_first

    assert smallest_first(("l", "s", "xs")) == ("xs", "s", "l")
    assert smallest_first(("pythia-410m", "pythia-70m")) == ("pythia-410m", "pythia-70m")
