"""The import paths plugin authors and users are told about keep working whatever the layout."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def test_documented_names_import_from_where_the_readme_says():
    from qeval_plugins import LoadContext, Option, QevalError, Quantizer, hookimpl
    from qeval_plugins.core import errors, hookspecs, options, quantizer
    from qeval_plugins.paths import tasks_path
    from qeval_plugins.testing import check_quantizer, make_tiny_model

    assert QevalError is errors.QevalError and hookimpl is hookspecs.hookimpl
    assert Option is options.Option
    assert Quantizer is quantizer.Quantizer and LoadContext is quantizer.LoadContext
    assert (tasks_path() / "qeval_sqnr").is_dir()
    assert callable(check_quantizer) and callable(make_tiny_model)


def test_importing_the_package_stays_light():
    """Every interpreter of the environment imports it at start-up (the lm-eval hook)."""
    code = "import sys, qeval_plugins; print([m for m in ('torch', 'lm_eval') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_installed_entry_points_resolve():
    points = {
        (point.group, point.name): point for point in metadata.distribution("qeval").entry_points
    }
    assert points[("lm_eval.models", "qeval")].load().__name__ == "QevalLM"
    assert callable(points[("console_scripts", "qeval")].load())
