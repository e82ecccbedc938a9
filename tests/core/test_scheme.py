"""A quantizer's version and scheme: stated by the plugin, checked by the host, recorded, shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fake_plugins
from rich.console import Console

from qeval_plugins import QevalError, Scheme
from qeval_plugins.core.plan import check_spec
from qeval_plugins.core.registry import Registry

DATA = Path(__file__).resolve().parents[1] / "data" / "report"


@pytest.mark.parametrize(
    ("spec", "weights", "activations", "kept"),
    [
        ("none", "unquantized", "unquantized", []),
        ("bnb-int8", "int8 per-row", "int8 per-row, |x| > 6 in fp16", ["lm_head", "embeddings"]),
        ("bnb-int8:threshold=0", "int8 per-row", "int8 per-row", ["lm_head", "embeddings"]),
        ("bnb-nf4-dq", "nf4 b64 dq", "unquantized", ["lm_head", "embeddings"]),
        ("rtn", "int4 g128", "unquantized", ["lm_head", "embeddings"]),
        ("rtn:bits=3:group_size=0:symmetric=false", "int3 per-channel asym", "unquantized",
         ["lm_head", "embeddings"]),
        ("rtn:format=mxfp4", "mxfp4", "unquantized", ["lm_head", "embeddings"]),
        ("rtn:format=fp8_e4m3:include_lm_head=true", "fp8_e4m3 g128", "unquantized",
         ["embeddings"]),
    ],
)  # fmt: skip
def test_builtin_schemes_are_recorded(spec, weights, activations, kept):
    record = check_spec(spec).record()
    assert record["scheme"] == {"weights": weights, "activations": activations, "kept": kept}
    assert record["quantizer_version"] == "1"


def test_scheme_describes_itself():
    scheme = Scheme("int4 g128", "int8 per-token", ("lm_head",))
    assert scheme.describe() == "W int4 g128 · A int8 per-token · kept lm_head"
    assert Scheme("mxfp4").describe() == "W mxfp4 · A unquantized"
    assert Scheme("", kept=["x"]).problems() == [  # type: ignore[arg-type]
        "scheme weights must be a non-empty string",
        "scheme kept must be a tuple of names, got ['x']",
    ]


BAD_PLUGIN = """
from qeval_plugins import Quantizer, Scheme, hookimpl

class Base(Quantizer):
    description = "a quantizer for a scheme test"

class WrongType(Base):
    name = "wrong-scheme"
    def scheme(self, options):
        return {"weights": "int4"}

class Broken(Base):
    name = "broken-scheme"
    def scheme(self, options):
        return Scheme(weights="int4\\nsecond line")

class NoVersion(Base):
    name = "no-version"
    version = ""

class Fine(Base):
    name = "fine-scheme"
    version = "2.1"
    def scheme(self, options):
        return Scheme(weights="ternary per-row")

@hookimpl
def qeval_register_quantizers(register):
    for quantizer in (WrongType(), Broken(), NoVersion(), Fine()):
        register(quantizer)
"""


@pytest.fixture
def bad_registry(monkeypatch, tmp_path):
    from qeval_plugins.core import plan

    fake_plugins(monkeypatch, tmp_path, {"schemes": BAD_PLUGIN})
    loaded = Registry().load()
    monkeypatch.setattr(plan, "get_registry", lambda: loaded)
    return loaded


def test_a_bad_scheme_is_one_line_before_anything_loads(bad_registry):
    with pytest.raises(QevalError, match=r"'wrong-scheme' of plugin 'schemes'.*not a Scheme"):
        check_spec("wrong-scheme")
    with pytest.raises(QevalError, match=r"'broken-scheme'.*scheme weights must be one line"):
        check_spec("broken-scheme")


def test_a_version_must_be_stated_and_is_recorded(bad_registry):
    with pytest.raises(QevalError, match="version must be a non-empty string"):
        bad_registry.get("no-version")
    record = check_spec("fine-scheme").record()
    assert record["quantizer_version"] == "2.1"
    assert record["scheme"] == {
        "weights": "ternary per-row",
        "activations": "unquantized",
        "kept": [],
    }


def test_qeval_quantizers_shows_the_default_scheme():
    from qeval_plugins.cli.listing import print_quantizers
    from qeval_plugins.core.registry import get_registry

    console = Console(width=200, record=True)
    print_quantizers(get_registry(), console)
    text = console.export_text()
    assert "W int4 g128 · A unquantized · kept lm_head, embeddings" in text
    assert "W nf4 b64 dq · A unquantized" in text


def test_the_report_shows_a_runs_scheme_under_its_label():
    from qeval_plugins.report.compare import scheme_text

    assert scheme_text({"weights": "int4 g128", "activations": "unquantized"}) == "W int4 g128"
    assert scheme_text({"weights": "int4", "activations": "int8"}) == "W int4 · A int8"
    assert scheme_text({"weights": "\x1b[2Jx" * 30}) == "W " + ("\\x1b[2Jx" * 30)[:40]
    assert scheme_text({"weights": ["not", "text"]}) is None and scheme_text(None) is None
    kept = {"weights": "int4 g128", "kept": ["lm_head", "embeddings", "layers.0"]}
    assert scheme_text(kept, 7) == "W int4 g128 + 7 kept"  # qeval.kept_layers: skip= kept them
    assert scheme_text(kept, 0) == scheme_text(kept) == "W int4 g128"


def test_the_report_table_shows_the_scheme(tmp_path):
    import json
    import shutil

    from qeval_plugins.report.compare import compare
    from qeval_plugins.report.load import load_runs
    from qeval_plugins.report.render import render

    source = next((DATA / "qeval-tiny" / "rtn-bits4").glob("results*.json"))
    results = json.loads(source.read_text())
    results["config"]["qeval"]["scheme"] = check_spec("rtn:bits=4").record()["scheme"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    shutil.copytree(DATA / "qeval-tiny" / "none", tmp_path / "none")
    runs, _ = load_runs([str(tmp_path)])
    console = Console(width=120, record=True)
    render(compare(runs), console)
    assert "W int4 g128" in console.export_text()
