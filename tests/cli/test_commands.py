"""The shape of the ``qeval`` command: one module per command, assembled by ``cli/main.py``;
adding a command is one file and one entry of ``COMMANDS``; no import circle in ``cli/``."""

from __future__ import annotations

import argparse
import ast
import types
from pathlib import Path

import pytest

from qeval_plugins.cli import main as main_module

CLI = Path(main_module.__file__).parent


def toy_command() -> types.ModuleType:
    """A command module as a newcomer would write it, built in memory."""
    toy = types.ModuleType("qeval_plugins.cli.greet")
    toy.__doc__ = "greet someone\n\nPrints a greeting, to show how a command is added."

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default="world", help="whom (default: %(default)s)")

    def run(args: argparse.Namespace) -> int:
        print(f"hello, {args.name}")
        return 3

    toy.add_arguments, toy.run = add_arguments, run
    return toy


def test_a_command_is_one_module_and_one_entry(monkeypatch, capsys):
    monkeypatch.setattr(main_module, "COMMANDS", [*main_module.COMMANDS, ("greet", toy_command())])
    assert main_module.main(["greet", "--name", "qeval"]) == 3
    assert capsys.readouterr().out == "hello, qeval\n"
    assert main_module.main([]) == 0  # the command list
    listed = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["greet", "greet", "someone"] for line in listed), listed
    with pytest.raises(SystemExit) as exited:
        main_module.main(["greet", "--help"])
    assert exited.value.code == 0
    assert "Prints a greeting, to show how a command is added." in capsys.readouterr().out


def test_a_toy_command_refuses_unknown_options_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(main_module, "COMMANDS", [("greet", toy_command())])
    with pytest.raises(SystemExit) as exited:
        main_module.main(["greet", "--nme", "x"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "qeval: error: unrecognized arguments: --nme x (see 'qeval --help')\n"
    )


def test_every_command_module_has_the_shape():
    modules = {name: module for name, module in main_module.COMMANDS}
    assert list(modules) == [
        "plugins",
        "quantizers",
        "tasks-path",
        "demo",
        "run",
        "scan",
        "cache",
        *(["report"] if "report" in modules else []),
        "predict",
        "study",
    ]
    for name, module in modules.items():
        assert callable(module.add_arguments) and callable(module.run), name
        summary = (module.__doc__ or "").strip().splitlines()[0]
        assert summary and "``" not in summary, name
        assert Path(module.__file__).stem == name.replace("-", "_")
    # every module of cli/ with add_arguments and run is a command (none forgotten)
    for path in CLI.glob("*.py"):
        defined = {
            node.name
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        if {"add_arguments", "run"} <= defined:
            assert path.stem.replace("_", "-") in modules, path.name


def cli_imports(path: Path) -> set[str]:
    """The ``qeval_plugins.cli`` modules ``path`` imports, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "qeval_plugins.cli":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "qeval_plugins.cli."
        ):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.split(".")[2]
                for alias in node.names
                if alias.name.startswith("qeval_plugins.cli.")
            }
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_no_import_circle_in_cli():
    graph = {path.stem: cli_imports(path) for path in CLI.glob("*.py")}
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph))
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check


def test_no_help_text_breaks_a_spec_at_its_hyphens(monkeypatch, capsys):
    """argparse wrapped ``bnb-fp4-`` / ``dq`` across lines in ``qeval demo --help``."""
    from qeval_plugins.cli.demo import DEFAULT_DEMO_QUANTIZERS

    for columns in (60, 80, 100):
        monkeypatch.setenv("COLUMNS", str(columns))
        with pytest.raises(SystemExit):
            main_module.main(["demo", "--help"])
        text = capsys.readouterr().out
        words = {word.strip(",()") for word in text.split()}
        assert set(DEFAULT_DEMO_QUANTIZERS) <= words, (columns, text)
        assert all(len(line) <= columns for line in text.splitlines())


def test_cache_help_names_both_kinds_of_entries(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    for argv in (["--help"], ["cache", "--help"]):
        with pytest.raises(SystemExit):
            main_module.main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "reference outputs" in text and "quantized models" in text, text
        assert "the reference cache" not in text
