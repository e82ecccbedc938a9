"""Every hook spec is documented and exercised by the test suite (after datasette's tests)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from qeval_plugins.core import hookspecs

SPECS = [
    name
    for name, value in vars(hookspecs).items()
    if name.startswith("qeval_") and inspect.isfunction(value)
]
TESTS = Path(__file__).resolve().parents[1]


def test_there_are_hooks():
    assert {"qeval_register_quantizers", "qeval_dequantize_weight"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "Args:" in doc and "Returns:" in doc, f"{name} needs Args and Returns in its docstring"
    for argument in inspect.signature(getattr(hookspecs, name)).parameters:
        assert f"{argument}:" in doc, f"{name}: argument {argument} is undocumented"


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_exercised_by_a_test(name):
    """A test other than this file calls or implements the hook."""
    users = [
        path.name
        for path in TESTS.rglob("test_*.py")
        if path.name != Path(__file__).name and name in path.read_text()
    ]
    assert users, f"no test exercises {name}"
