"""Bad input ends in one clear line: no traceback, nothing written, a non-zero exit."""

from __future__ import annotations

import pytest
from conftest import lm_eval_args, only_qeval_group, run_cli

from qeval_plugins import QevalError
from qeval_plugins.core.registry import Registry


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
        (
            "quantizer=rtn:bits=4",
            "is a spec, not a name: in lm_eval's --model_args write quantizer=rtn,bits=4",
        ),
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
    from qeval_plugins.cli.main import main

    with pytest.raises(QevalError):
        main(["demo", "--quantizers", "nosuch"])


def test_model_path_that_is_not_a_checkpoint(tmp_path):
    from qeval_plugins.backend.checkpoints import resolve_pretrained

    with pytest.raises(QevalError, match=r"has no config\.json"):
        resolve_pretrained(str(tmp_path))


def test_unknown_quantizer_mentions_plugins_that_failed(monkeypatch, tmp_path):
    from importlib import metadata

    (tmp_path / "exploding_plugin.py").write_text("raise ImportError('no module named foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="exploding", value="exploding_plugin", group="qeval")
    only_qeval_group(monkeypatch, [point])
    with pytest.raises(QevalError, match="Plugins that failed to load: exploding"):
        Registry().load().get("exploding-q")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            ["lm_eval", "--model", "qeval", "--model_args", "quantizer=nf4,quantizer=int8"],
            "model_arg 'quantizer' is given twice",
        ),
        (
            ["lm_eval", "--model", "qeval", "--model_args", "quantizer=none", "--device", "cuda"],
            "--device cuda: this machine has no usable CUDA GPU",
        ),
        (
            ["qeval", "run", "--model", "qeval-tiny", "--quantizers", "none", "--device", "cuda"],
            "--device cuda: this machine has no usable CUDA GPU",
        ),
    ],
)
def test_more_bad_input_is_one_line(command, expected, tmp_path, tasks_dir, monkeypatch):
    """CUDA is hidden (CUDA_VISIBLE_DEVICES=""), so the case is the same on a GPU machine."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if command[0] == "lm_eval":
        command += ["--tasks", "qeval_demo_facts", "--include_path", str(tasks_dir)]
    else:
        command += ["--tasks", "qeval_demo_facts", "--output", str(tmp_path / "runs")]
    command += [] if "--device" in command else ["--device", "cpu"]
    assert_one_clear_line(run_cli(command, cwd=tmp_path), expected)


@pytest.mark.parametrize("available", [False, True])
def test_a_cuda_device_must_exist_whatever_the_quantizer(monkeypatch, available):
    import torch

    from qeval_plugins.core.plan import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cpu")
    check_device(None)
    with pytest.raises(QevalError, match="--device gpu: not a device name torch knows"):
        check_device("gpu")
    if available:
        check_device("cuda")
        check_device("cuda:0")
        with pytest.raises(QevalError, match=r"has 1 CUDA device\(s\), numbered from 0"):
            check_device("cuda:3")
    else:
        for device in ("cuda", "cuda:0"):
            with pytest.raises(QevalError, match="no usable CUDA GPU"):
                check_device(device)


def test_model_args_with_spaces_are_read_not_dropped():
    """lm-eval's parser keeps "quantizer " as a key: the run silently became quantizer=none."""
    from qeval_plugins.backend.model_args import parse_model_args

    parsed = parse_model_args(" pretrained = qeval-tiny , quantizer = rtn , bits = 3 ,")
    assert parsed == {"pretrained": "qeval-tiny", "quantizer": "rtn", "bits": 3}
    with pytest.raises(QevalError, match="model_arg 'bits' is given twice"):
        parse_model_args("quantizer=rtn,bits=3, bits=4")
    with pytest.raises(QevalError, match="model_arg 'bits' is not key=value"):
        parse_model_args("quantizer=rtn,bits")


def test_model_args_with_spaces_reach_the_quantizer(tiny_model_dir):
    from qeval_plugins.backend.lm import QevalLM

    lm = QevalLM.create_from_arg_string(
        f"pretrained = {tiny_model_dir} , quantizer = rtn , bits = 3", {"device": "cpu"}
    )
    assert lm.get_model_info()["qeval"]["spec"] == "rtn:bits=3"


def test_a_spec_option_given_twice_is_one_line():
    from qeval_plugins.core.specs import parse_spec

    assert parse_spec(" rtn :bits=3") == ("rtn", {"bits": "3"})
    with pytest.raises(QevalError, match="option 'bits' is given twice in quantizer spec"):
        parse_spec("rtn:bits=3:bits=4")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--limit", "0"], "argument --limit: must be a whole number >= 1, got '0'"),
        (["demo", "--limit", "-1"], "argument --limit: must be a whole number >= 1, got '-1'"),
        (["demo", "--limit", "²"], "argument --limit: must be a whole number >= 1, got '²'"),
        (["plugins", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_mistakes_are_one_line(argv, expected, capsys):
    from qeval_plugins.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"qeval: error: {expected}")


def test_demo_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
    from qeval_plugins.cli.main import main

    (tmp_path / "a-file").write_text("x")
    assert main(["demo", "--quantizers", "none", "--output", str(tmp_path / "a-file")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qeval: error: --output") and "is a file, not a folder" in err


def test_version_and_bare_command(capsys):
    from qeval_plugins.cli.main import main
    from qeval_plugins.core.version import qeval_version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"qeval {qeval_version()}\n"
    assert qeval_version() != "unknown"
    assert main([]) == 0
    listed = capsys.readouterr().out
    for command in ("plugins", "quantizers", "tasks-path", "demo", "run", "report"):
        assert command in listed


def test_repeated_keys_on_an_lm_eval_command_line():
    """lm-eval's own parser keeps the last value of a repeated key and only logs a warning."""
    from qeval_plugins.backend.model_args import checked_model_args, repeated_command_line_keys

    lm_eval = "/venv/bin/lm_eval"
    assert repeated_command_line_keys([lm_eval, "--model_args", "quantizer=nf4,quantizer=int8"])
    assert repeated_command_line_keys([lm_eval, "-a", "bits=3", "quantizer=rtn", "bits=4"])
    assert repeated_command_line_keys([lm_eval, "--model_args=bits=3,bits=4"]) == ["bits"]
    assert not repeated_command_line_keys([lm_eval, "--model_args", "a=[1,2],b=2", "--tasks", "x"])
    assert not repeated_command_line_keys(["pytest", "--model_args", "a=1,a=2"])
    assert checked_model_args({" quantizer ": " rtn ", "bits": 3}, ["pytest"]) == {
        "quantizer": "rtn",
        "bits": 3,
    }
    with pytest.raises(QevalError, match="model_arg 'bits' is given twice"):
        checked_model_args({"bits": 3, "bits ": 4}, ["pytest"])


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ({"quantizer": "rtn", "bit": 3}, "unknown model_arg 'bit'. Did you mean 'bits'?"),
        ({"Quantizer": "rtn"}, "unknown model_arg 'Quantizer'. Did you mean 'quantizer'?"),
        ({"quantiser": "rtn"}, "unknown model_arg 'quantiser'. Did you mean 'quantizer'?"),
    ],
)
def test_a_misspelt_model_arg_is_one_line_before_loading(tiny_model_dir, model_args, expected):
    """It reached from_pretrained: a TypeError after loading, or silently quantizer=none."""
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError) as error:
        QevalLM(pretrained=str(tiny_model_dir), device="cpu", **model_args)
    assert str(error.value).startswith(expected)


def test_an_unknown_model_arg_the_model_refuses_is_one_line(tiny_model_dir):
    from qeval_plugins.backend.lm import QevalLM

    with pytest.raises(QevalError, match="model_arg 'no_such_flag' is not known to qeval"):
        QevalLM(pretrained=str(tiny_model_dir), device="cpu", no_such_flag=1)


def test_a_misspelt_spec_option_is_one_line():
    from qeval_plugins.core.plan import check_spec

    with pytest.raises(QevalError, match=r"unknown model_arg 'bit'\. Did you mean 'bits'"):
        check_spec("rtn:bit=3")


def test_mps_must_exist(monkeypatch):
    import torch

    from qeval_plugins.core.plan import check_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(QevalError, match="Apple's MPS is not available here"):
        check_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_device("mps")


@pytest.mark.parametrize("quantizer", ["none", "rtn", "bnb-nf4"])
def test_a_misspelt_dtype_is_one_line_for_every_quantizer(quantizer):
    """It was lm-eval's AttributeError traceback for every quantizer but none."""
    from qeval_plugins.core.plan import plan_quantization

    with pytest.raises(QevalError, match=r"dtype=flot16 is not a model dtype\. Did you mean"):
        plan_quantization(quantizer, {"dtype": "flot16"}, {"dtype"}, "cpu")


def test_qeval_run_checks_the_dtype_in_model_args_first(tmp_path):
    from qeval_plugins.sweep.planning import prepare

    with pytest.raises(QevalError, match="dtype=float8 is not a model dtype"):
        prepare(["qeval-tiny"], ["rtn"], ["qeval_demo_facts"], tmp_path, "cpu",
                ["--model_args", "dtype=float8"], False)  # fmt: skip
