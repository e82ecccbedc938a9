"""Bad input ends in one clear line: no traceback, nothing written, a non-zero exit."""

from __future__ import annotations

import pytest
from conftest import lm_eval_args, run_cli

from qeval_plugins import QevalError
from qeval_plugins.plugins import Registry


def assert_one_clear_line(result, expected: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("qeval: error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ("quantizer=bnb-nf5", "unknown quantizer 'bnb-nf5'. Did you mean 'bnb-nf4'?"),
        ("quantizer=rtn,bits=12", "option 'bits' of quantizer 'rtn' must be <= 8, got 12"),
        ("quantizer=rtn,threshold=3.0", "option 'threshold' belongs to quantizer bnb-int8"),
        ("quantizer=nf4,pretrained=./no/such/model", "model path './no/such/model' does not exist"),
    ],
)
def test_stock_lm_eval_cli_prints_one_line(model_args, expected, tmp_path, tasks_dir):
    output = tmp_path / "results"
    if "pretrained=" not in model_args:
        model_args = f"pretrained=qeval-tiny,{model_args}"
    result = run_cli(
        [
            "lm_eval",
            *lm_eval_args(model_args, "qeval_demo_facts", tasks_dir, "--output_path", str(output)),
        ],
        cwd=tmp_path,
    )
    assert_one_clear_line(result, expected)
    assert not output.exists()


def test_qeval_cli_prints_one_line_for_bad_specs(tmp_path):
    result = run_cli(["qeval", "demo", "--quantizers", "rtn:bits", "--output", str(tmp_path / "o")])
    assert_one_clear_line(result, "bad option 'bits' in quantizer spec 'rtn:bits'")
    assert not (tmp_path / "o").exists()


def test_traceback_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("QEVAL_DEBUG", "1")
    from qeval_plugins.cli import main

    with pytest.raises(QevalError):
        main(["demo", "--quantizers", "nosuch"])


def test_model_path_that_is_not_a_checkpoint(tmp_path):
    from qeval_plugins.models import resolve_pretrained

    with pytest.raises(QevalError, match=r"has no config\.json"):
        resolve_pretrained(str(tmp_path))


def test_unknown_quantizer_mentions_plugins_that_failed(monkeypatch, tmp_path):
    from importlib import metadata

    from qeval_plugins import plugins as plugins_module

    (tmp_path / "exploding_plugin.py").write_text("raise ImportError('no module named foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="exploding", value="exploding_plugin", group="qeval")
    monkeypatch.setattr(plugins_module.metadata, "entry_points", lambda group: [point])
    with pytest.raises(QevalError, match="Plugins that failed to load: exploding"):
        Registry().load().get("exploding-q")
