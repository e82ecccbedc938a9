"""The wheel carries everything a user needs: tasks, the embedded model, the lm-eval hook."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import REPO, pip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(out), str(REPO))
    [built] = out.glob("qeval-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "qeval_lm_eval.pth" in names  # start-up hook at the top of site-packages
    assert "qeval_plugins/tasks/qeval_demo/qeval_demo_facts.yaml" in names
    assert "qeval_plugins/tasks/qeval_demo/facts.jsonl" in names
    assert "qeval_plugins/tasks/qeval_outliers/qeval_outliers.yaml" in names
    assert "qeval_plugins/embedded/qeval-tiny/config.json" in names
    assert "qeval_plugins/embedded/qeval-tiny/model.safetensors" in names
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "[lm_eval.models]\nqeval = qeval_plugins.backend.lm:QevalLM" in entry_points
    assert "[console_scripts]\nqeval = qeval_plugins.cli.main:main" in entry_points


@pytest.mark.slow
def test_installed_wheel_finds_its_tasks_and_model(wheel, tmp_path):
    target = tmp_path / "site"
    pip("install", "--target", str(target), str(wheel))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from qeval_plugins.paths import tasks_path; from qeval_plugins.backend.checkpoints import "
        "resolve_pretrained; print(tasks_path()); print(resolve_pretrained('qeval-tiny'))"
    )
    # -S: no site-packages, so the editable checkout (imported at start-up) cannot shadow it
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, str(target)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    tasks, model = result.stdout.split()
    assert tasks == str(target / "qeval_plugins" / "tasks")
    assert model == str(target / "qeval_plugins" / "embedded" / "qeval-tiny")
