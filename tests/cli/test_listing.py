"""``qeval plugins`` and ``qeval quantizers`` read whole at 80 columns: no word broken, no error
text cut short with "…"; a table where everything fits on one line per cell."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
from conftest import fake_plugins

from qeval_plugins.cli.main import main
from qeval_plugins.core.registry import PluginInfo, get_registry

MISSPELT = (
    "failed to load: unknown hook 'qeval_register_quantizer'. Did you mean "
    "'qeval_register_quantizers'? Hooks: qeval_dequantize_weight, qeval_register_quantizers"
)


def listing(monkeypatch, capsys, command: str, columns: int, *options: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main([command, *options]) == 0
    return capsys.readouterr().out.splitlines()


def words(lines: list[str]) -> set[str]:
    """Every whitespace-separated word shown, with and without a trailing comma."""
    found = set(re.findall(r"\S+", "\n".join(lines)))
    return found | {word.removesuffix(",") for word in found}


def test_quantizers_at_80_columns_break_no_word(monkeypatch, capsys):
    """The table's 13-column cells broke ``bitsandbyte|s`` and ``compute_dty|pe``."""
    lines = listing(monkeypatch, capsys, "quantizers", 80, "--options")
    assert max(map(len, lines)) <= 80
    shown = words(lines)
    for entry in get_registry().all():
        quantizer = entry.quantizer
        expected = [quantizer.name, *quantizer.description.split()]
        for option in quantizer.options:
            expected += [f"{option.name}:", *option.help.split()]
        missing = [word for word in expected if word not in shown]
        assert missing == [], (quantizer.name, missing)
    assert "…" not in "\n".join(lines)
    wide = listing(monkeypatch, capsys, "quantizers", 1000, "-v")
    assert any(line.startswith("┃ quantizer") for line in wide)  # fits: still a table


def test_quantizers_are_one_line_each_by_default(monkeypatch, capsys):
    """The full listing was 355 lines at 80 columns; by default a quantizer takes one line (14 of
    21 took two), its description cut with "…" where it does not fit, no title line, and no
    option is shown."""
    entries = get_registry().all()
    lines = listing(monkeypatch, capsys, "quantizers", 80)
    assert max(map(len, lines)) <= 80 and all(line == line.rstrip() for line in lines)
    assert len(lines) == len(entries) + 2  # the hint's two lines
    names = [line.split()[0] for line in lines[: len(entries)]]
    assert names == [entry.quantizer.name for entry in entries]
    for line, entry in zip(lines, entries, strict=False):
        description = entry.quantizer.description
        if line.endswith("…"):
            assert len(line) == 80 and description.startswith(line[:-1].split("  ")[-1])
        else:
            assert line.endswith(description)
    assert any(line.endswith("…") for line in lines)
    shown = " ".join(lines)
    assert "group_size" not in shown and "symmetric" not in shown
    assert "'qeval quantizers NAME...' shows those quantizers' options" in shown
    wide = listing(monkeypatch, capsys, "quantizers", 1000)
    assert len(wide) == len(entries) + 5  # 3 lines above the rows, 1 below, the hint
    assert any(line.startswith("┃ quantizer") for line in wide)


def test_quantizers_named_are_shown_in_full(monkeypatch, capsys):
    """Names or aliases choose the quantizers, each listed once, with all their options."""
    lines = listing(monkeypatch, capsys, "quantizers", 80, "rtn", "nf4", "bnb-nf4")
    headings = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert headings == ["rtn", "bnb-nf4"]  # no title line
    # an option wrapped (rtn's format choices) goes on 2 further in, never at an option's column
    format_line = next(index for index, line in enumerate(lines) if line.startswith("  format:"))
    assert lines[format_line + 1].startswith("    | ")
    assert lines[format_line + 2].startswith("      number format")
    assert "  skip: str = ''" in lines  # an empty default is shown, not left blank
    shown = words(lines)
    rtn = get_registry().get("rtn").quantizer
    for option in rtn.options:
        assert f"{option.name}:" in shown and all(word in shown for word in option.help.split())
    assert "storage:" in shown  # an option of bnb-nf4


def test_an_unknown_quantizer_name_is_one_line_with_a_suggestion(capsys):
    assert main(["quantizers", "rtn", "gptx"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("qeval: error: unknown quantizer 'gptx'. Did you mean 'gptq'?"), line


def test_plugins_at_80_columns_show_whole_errors(monkeypatch, capsys):
    """The error of a plugin whose hook is misspelt was cut to ``'qeval_register_qua…``."""
    plugins = {
        "qeval.bnb": PluginInfo(
            "qeval.bnb", "built-in", "0.1.0", ["bnb-int8", "bnb-nf4", "bnb-fp4-dq"]
        ),
        "misspelt": PluginInfo("misspelt", "evilplugs", "0.1", error=MISSPELT),
        "clash": PluginInfo(
            "clash",
            "evilplugs",
            "0.1",
            ["dup", "clashok"],
            problems=[
                "quantizer 'rtn' of plugin 'clash' (evilplugs) is disabled: 'rtn' is already the "
                "name or an alias of quantizer 'rtn' of plugin 'qeval.rtn' (built-in)"
            ],
        ),
    }
    monkeypatch.setattr(
        "qeval_plugins.core.registry.get_registry", lambda: SimpleNamespace(plugins=plugins)
    )
    lines = listing(monkeypatch, capsys, "plugins", 80)
    assert max(map(len, lines)) <= 80 and "…" not in "\n".join(lines)
    assert " ".join(" ".join(lines).split()).count(MISSPELT) == 1
    shown = words(lines)
    for info in plugins.values():
        for text in [info.name, info.version, info.source, *info.quantizers, *info.problems]:
            assert all(word in shown for word in text.split()), text
    heading = next(line for line in lines if line.startswith("qeval.bnb "))
    assert heading.split() == ["qeval.bnb", "0.1.0", "built-in", "loaded"]


CLASHY = """
from qeval_plugins import Quantizer, hookimpl
class Mine(Quantizer):
    name = "mine"
    aliases = ("nf4", "my-q", "rtn")
    description = "reuses two built-in names as aliases"
class Bad(Quantizer):
    name = "Bad Name"
    description = "breaks the naming rule"
@hookimpl
def qeval_register_quantizers(register):
    register(Mine())
    register(Bad())
"""


def install(monkeypatch, tmp_path, modules: dict[str, str]) -> None:
    """``modules`` (entry-point name -> source) as the only external plugins, registry reset."""
    from qeval_plugins.core.registry import reset_registry

    fake_plugins(monkeypatch, tmp_path, modules)
    reset_registry()


def test_a_dropped_alias_is_not_listed(monkeypatch, capsys, tmp_path, fresh_registry):
    install(monkeypatch, tmp_path, {"clashy": CLASHY})
    assert get_registry().aliases("mine") == ["my-q"]
    for columns in (80, 1000):
        lines = listing(monkeypatch, capsys, "quantizers", columns)
        [row] = [line for line in lines if re.search(r"(^|│ )mine\b", line)]
        assert "my-q" in row and "nf4" not in row and "rtn" not in row, row
    assert get_registry().get("nf4").quantizer.name == "bnb-nf4"
    from qeval_plugins.core.plan import plan_quantization

    assert plan_quantization("my-q", {}, set(), "cpu").record()["aliases"] == ["my-q"]


def test_broken_plugins_are_one_warning_line_on_every_command(
    monkeypatch, capsys, caplog, tmp_path, fresh_registry
):
    """Each problem was a warning line of its own on every command (5-7 lines per plugin)."""
    modules = {"clashy": CLASHY, "broken": "raise RuntimeError('boom')\n", "fine": ""}
    install(monkeypatch, tmp_path, modules)
    with caplog.at_level(logging.WARNING, logger="qeval"):
        listing(monkeypatch, capsys, "quantizers", 80)
    assert [record.getMessage() for record in caplog.records] == [
        "2 qeval plugins failed to load or have problems (broken, clashy); run 'qeval plugins' "
        "for details"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qeval"):
        lines = listing(monkeypatch, capsys, "plugins", 80)
    assert not caplog.records  # the details are printed: no line pointing to this very command
    text = " ".join(" ".join(lines).split())
    assert "alias 'nf4' dropped" in text and "failed to load: RuntimeError: boom" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cache", "list"], "List the cache's entries"),
        (["cache", "prune"], "Delete entries unused for --older-than days"),
        (["cache", "clear"], "Clear the cache: delete every entry"),
        (["scan"], "of a quantizer that has a skip= option"),
    ],
)
def test_help_says_what_the_command_does(argv, expected, monkeypatch, capsys):
    """``qeval cache list/prune/clear --help`` had no description line; ``qeval scan``'s
    --quantizer read as if any spec could be given "with a skip= option"."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert expected in " ".join(capsys.readouterr().out.split())
