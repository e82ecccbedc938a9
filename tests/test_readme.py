"""The README's commands are the ones CI runs, and the code is ruff-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    block = re.search(
        r"<!-- setup -->\s*```(?:bash)?\n(.*?)```", (REPO / "README.md").read_text(), re.S
    )
    assert block, "README.md needs the setup block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("qeval demo") and commands[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1].split(" && ", 2)[2]  # after venv creation + activation
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_code_is_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation other than ``-`` and ``_``
    dropped, spaces turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_within_itself_reach_a_heading():
    text = (REPO / "README.md").read_text()
    outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
    anchors = {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", outside_code, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 10  # the table of contents at the top
    assert sorted(set(links) - anchors) == []
