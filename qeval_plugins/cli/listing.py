"""What ``qeval plugins``, ``qeval quantizers`` and ``qeval cache list`` print, readable at any
terminal width.

Each listing is a rich table when every cell fits on one line of it (a wide terminal), else a
list: per plugin or quantizer a heading line, then its texts indented below, wrapped at spaces
(an option's continuation lines indented under its first) — a word is cut only when it is longer
than a whole line, and no text is shortened with "…", except in the short one-line-per-quantizer
listing, whose descriptions ``qeval quantizers NAME`` shows whole.
Every text a plugin supplied goes through :func:`qeval_plugins.core.text.one_line` and is never
read as rich markup.
"""

from __future__ import annotations

from typing import Any

INDENT = 2  # the list layout's texts under their heading
OPTION_CONTINUED_INDENT = 2  # an option's wrapped lines: this much further in than its first
OPTION_HELP_INDENT = 6  # an option's help under the option
SEPARATOR = "  "  # between the parts of a heading
UNBOUNDED = 1_000_000  # the width a table is measured at: its one-line-per-cell width


def print_plugins(registry: Any, console: Any) -> None:
    """Every plugin of ``registry``: name, version, source, its quantizers, and its status
    (loaded, or the load error) with its disabled quantizers and name clashes."""
    from rich.text import Text

    from qeval_plugins.core.text import one_line

    plugins = list(registry.plugins.values())
    rows = []
    for info in plugins:
        error = Text(one_line(info.error), style="red") if info.error else None
        problems = [Text(one_line(problem), style="yellow") for problem in info.problems]
        cells = (info.name, info.version, info.source, ", ".join(info.quantizers))
        status = error or Text("loaded", style="green")
        rows.append([*(Text(one_line(cell)) for cell in cells), [status, *problems]])
    columns = ("plugin", "version", "from", "quantizers", "status")
    if fits_one_table(console, columns, rows):
        return
    for info, (name, version, source, quantizers, status) in zip(plugins, rows, strict=True):
        name.stylize("bold")
        state = Text("failed", style="red") if info.error else status[0]
        print_indented(console, [Text(SEPARATOR).join([name, version, source, state])], 0)
        listed = [Text("quantizers: ") + quantizers] if info.quantizers else []
        print_indented(console, listed + (status if info.error else status[1:]), INDENT)


def print_quantizers(registry: Any, console: Any, entries: list[Any] | None = None) -> None:
    """Quantizers of ``registry`` in full (``entries``, default every one): the aliases that
    select each (not those dropped in a clash), description, scheme, options (type, default,
    range, help), whether it can run here, and its plugin."""
    from rich.text import Text

    from qeval_plugins.core.text import one_line

    rows = []
    for entry in registry.all() if entries is None else entries:
        quantizer = entry.quantizer
        options = [
            (
                Text(one_line(_describe(option).replace("|", " | "))),
                Text(one_line(option.help), style="dim"),
            )
            for option in quantizer.options
        ]
        name, aliases, here, description = _summary(registry, entry)
        plugin = Text(one_line(entry.plugin.name))
        rows.append((name, aliases, description + _scheme_line(entry), options, here, plugin))
    columns = ("quantizer", "aliases", "description", "options", "here", "plugin")
    table_rows = [
        [name, aliases, description, _option_cell(options), here, plugin]
        for name, aliases, description, options, here, plugin in rows
    ]
    if fits_one_table(console, columns, table_rows, lines=True):
        return
    for index, (name, aliases, description, options, here, plugin) in enumerate(rows):
        heading = [name] + ([Text("(") + aliases + Text(")")] if aliases else [])
        heading += [here, Text("plugin ") + plugin]
        if index:
            console.print()
        print_indented(console, [Text(SEPARATOR).join(heading)], 0)
        print_indented(console, [description], INDENT)
        for option, help_text in options:
            print_indented(console, [option], INDENT, OPTION_CONTINUED_INDENT)
            print_indented(console, [help_text], OPTION_HELP_INDENT)


def print_quantizer_lines(registry: Any, console: Any) -> None:
    """One line per quantizer of ``registry``: name, aliases, whether it can run here,
    description (cut with "…" at the console's width; ``qeval quantizers NAME`` shows it whole);
    then how to see options."""
    from rich.text import Text

    rows = [list(_summary(registry, entry)) for entry in registry.all()]
    columns = ("quantizer", "aliases", "here", "description")
    if not fits_one_table(console, columns, rows):
        for name, aliases, here, description in rows:
            heading = Text(SEPARATOR).join(
                [name, *([Text("(") + aliases + Text(")")] if aliases.plain else []), here]
            )
            line = Text(SEPARATOR).join([heading, description])
            line.truncate(console.width, overflow="ellipsis")
            console.print(line, soft_wrap=True)
    hint = Text(
        "'qeval quantizers NAME...' shows those quantizers' options, scheme and plugin; "
        "'qeval quantizers --options' shows every quantizer's.",
        style="dim",
    )
    print_indented(console, [hint], 0)


def _summary(registry: Any, entry: Any) -> tuple[Any, Any, Any, Any]:
    """(name, aliases, whether it can run here, description) of a registered quantizer, as
    printable Texts."""
    from rich.text import Text

    from qeval_plugins.core.plan import availability
    from qeval_plugins.core.text import one_line

    quantizer = entry.quantizer
    here = availability(quantizer)
    return (
        Text(one_line(quantizer.name), style="bold"),
        Text(one_line(", ".join(registry.aliases(quantizer.name)))),
        Text(one_line(here), style="green" if here == "ok" else "yellow"),
        Text(one_line(quantizer.description)),
    )


def _describe(option: Any) -> str:
    """``option.describe()`` with an empty default shown as ``''`` rather than as nothing."""
    text = option.describe()
    return text.replace(" = ", " = ''", 1) if option.default == "" else text


def _option_cell(options: list[tuple[Any, Any]]) -> Any:
    """The options as one table cell: ``describe — help`` per line, "-" when none."""
    from rich.text import Text

    if not options:
        return Text("-")
    return Text("\n").join(option + Text(" — ") + help_text for option, help_text in options)


def fits_one_table(
    console: Any,
    columns: tuple[str, ...],
    rows: list[list[Any]],
    lines: bool = False,
    title: str | None = None,
) -> bool:
    """Print ``rows`` as a table (titled ``title``, if any) and return True when every cell fits
    on one line at ``console.width`` (the table's widest rendering needs no wrapping); else
    print nothing and return False. A cell is a Text or a list of Texts (one line each)."""
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=lines)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text("\n").join(cell) if isinstance(cell, list) else cell for cell in row))
    unbounded = console.options.update_width(UNBOUNDED)
    if Measurement.get(console, unbounded, table).maximum > console.width:
        return False
    console.print(table)
    return True


def print_indented(console: Any, texts: list[Any], indent: int, continued: int = 0) -> None:
    """Each text on lines of its own, ``indent`` spaces in (its wrapped lines ``continued``
    spaces more), wrapped at spaces to the console's width (a word longer than a line is cut,
    never shortened); no trailing spaces."""
    from rich.text import Text

    for text in texts:
        lines = list(text.wrap(console, max(1, console.width - indent), overflow="fold"))
        if continued and len(lines) > 1:  # the rest re-wrapped to the narrower width
            rest = text[len(lines[0].plain) :]
            rest = rest[len(rest.plain) - len(rest.plain.lstrip()) :]
            width = max(1, console.width - indent - continued)
            lines[1:] = rest.wrap(console, width, overflow="fold")
        for number, line in enumerate(lines):
            line.rstrip()
            pad = Text(" " * (indent + (continued if number else 0)))
            console.print(pad + line, soft_wrap=True)


def _scheme_line(entry: Any) -> Any:
    """The quantizer's scheme at its default options, as a dim second line of its description.

    Empty when it states no scheme, or its plugin fails to (``qeval plugins`` shows why).
    """
    from rich.text import Text

    from qeval_plugins.core.errors import QevalError
    from qeval_plugins.core.options import resolve_options
    from qeval_plugins.core.quantizer import Scheme
    from qeval_plugins.core.registry import run_finalize_options, run_scheme
    from qeval_plugins.core.text import one_line

    quantizer = entry.quantizer
    try:
        defaults = resolve_options(quantizer.name, quantizer.options, {})
        record = run_scheme(
            quantizer, entry.plugin, run_finalize_options(quantizer, entry.plugin, defaults)
        )
    except QevalError:
        return Text("")
    if record is None:
        return Text("")
    scheme = Scheme(record["weights"], record["activations"], tuple(record["kept"]))
    return Text("\n" + one_line(scheme.describe()), style="dim")
