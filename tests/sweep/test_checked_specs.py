"""A quantizer spec is read and validated once per command: the parsed plan flows from the
command line to each run's checks, settings record and lm_eval command line."""

from __future__ import annotations

from collections import Counter

from qeval_plugins.core import plan, specs
from qeval_plugins.sweep import specs as checked_specs
from qeval_plugins.sweep.driver import make_units
from qeval_plugins.sweep.planning import prepare
from qeval_plugins.sweep.unit import lm_eval_command


def test_a_sweep_reads_each_spec_once(tmp_path, monkeypatch):
    """``parse_spec`` ran three times per spec before the first run (plan_runs, and twice in
    the --model_args check), and again per run for its settings and its command line."""
    parsed = Counter()
    real = specs.parse_spec

    def counting(spec):
        parsed[spec] += 1
        return real(spec)

    for module in (specs, plan, checked_specs):
        monkeypatch.setattr(module, "parse_spec", counting)
    wanted = ["rtn:bits=4:kv_bits=8", "none"]
    runs, settings, _ = prepare(
        ["qeval-tiny", "org/model"],
        wanted,
        ["qeval_demo_facts"],
        tmp_path / "runs",
        "cpu",
        ["--model_args", "dtype=float32"],
        False,
    )
    units = make_units(runs, settings, ["t"], ["t"], "cpu", [], False)
    commands = [lm_eval_command(unit, tmp_path) for unit in units]
    assert parsed == Counter(wanted)  # two models, each spec read once
    model_args = [command[command.index("--model_args") + 1] for command in commands]
    assert model_args == [
        f"pretrained={model},{specs.spec_model_args(spec)}"
        for model in ("qeval-tiny", "org/model")
        for spec in wanted
    ]
    assert [settings[run]["quantizer"] for run in runs] == wanted * 2
    assert runs[0].checked.plan.options["bits"] == 4 and runs[0].checked.plan.kv is not None
