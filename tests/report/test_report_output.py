"""What ``qeval report`` writes: terminal text safe from hostile names and readable at 80
columns, Markdown / HTML / CSV that a name cannot break or weaponise, chart files whose names
never collide or overflow, normal file permissions, and the command line's one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

import pytest
from rich.console import Console

from qeval_plugins.cli.main import main
from qeval_plugins.report.compare import compare
from qeval_plugins.report.export import export
from qeval_plugins.report.layout import grid_lines
from qeval_plugins.report.load import load_runs
from qeval_plugins.report.plot import plot
from qeval_plugins.report.render import render
from qeval_plugins.report.summary import summary_grid

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "report"
DEMO = TESTS.parent / "reports" / "runs"
NONE_RUN = DATA / "qeval-tiny" / "none" / "results_2026-11-23T10-00-00.000000.json"
NF4_RUN = DATA / "qeval-tiny" / "bnb-nf4" / "results.json"
# What must never reach a terminal raw: ESC (CSI, OSC), BEL, C1 CSI, CR, backspace, bidi override
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example\x07x\x1b]8;;\x07\x9b31m\r\u202e"


def text_of(report, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    render(report, console)
    return console.export_text()


def rewrite_values(node, change):
    """``node`` with every string value passed through ``change``."""
    if isinstance(node, dict):
        return {key: rewrite_values(value, change) for key, value in node.items()}
    if isinstance(node, list):
        return [rewrite_values(value, change) for value in node]
    return change(node) if isinstance(node, str) else node


def hostile_report(tmp_path: Path):
    """The none and bnb-nf4 fixtures with control sequences after every text value (but the
    figures written as text, "inf" and "N/A") and every task, layer and option name (but
    qeval_sqnr's), in files whose folder names hold them too; and a missing path with them."""

    def change(text: str) -> str:
        return text if text in ("inf", "-inf", "N/A") else f"{text}{HOSTILE}"

    def rename(mapping: dict) -> dict:
        return {key if key == "qeval_sqnr" else change(key): v for key, v in mapping.items()}

    paths = []
    for index, source in enumerate((NONE_RUN, NF4_RUN)):
        data = rewrite_values(json.loads(source.read_text()), change)
        for section in ("results", "n-shot", "configs", "higher_is_better", "group_subtasks"):
            data[section] = rename(data[section])
        block = data["config"]["qeval"]
        block["options"] = rename(block["options"])
        if block.get("sqnr"):
            block["sqnr"]["weights"]["layers"] = rename(block["sqnr"]["weights"]["layers"])
        path = tmp_path / f"r{index}{HOSTILE[:4]}" / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(data))
        paths.append(path)
    runs, warnings = load_runs([*paths, tmp_path / f"missing{HOSTILE}"])
    return compare(runs, warnings=warnings)


def test_control_sequences_never_reach_the_terminal_or_an_export(tmp_path):
    report = hostile_report(tmp_path)
    assert report.comparisons and report.warnings
    for width in (80, 200):
        text = text_of(report, width)
        assert not RAW_CONTROLS.search(text), repr(RAW_CONTROLS.search(text))
        assert "\\x1b[2J" in text and "\\x07" in text and "\\x9b" in text  # visible instead
    out = tmp_path / "out"
    for fmt in ("markdown", "csv", "json", "html"):
        written = export(report, fmt, out / f"report.{fmt}").read_text(encoding="utf-8")
        assert not RAW_CONTROLS.search(written), (fmt, RAW_CONTROLS.search(written))
        assert "\\x1b" in written or "\\\\x1b" in written, fmt
    assert json.loads((out / "report.json").read_text())["models"]


def test_rich_markup_in_names_prints_literally(tmp_path):
    data = json.loads(NF4_RUN.read_text())
    data["config"]["qeval"]["spec"] = "[red]x[/red]"
    data["results"]["[bold]t"] = data["results"].pop("qeval_demo_facts")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    runs, warnings = load_runs([path])
    console = Console(width=120, record=True, force_terminal=True, file=io.StringIO())
    render(compare(runs, warnings=warnings), console)
    text = console.export_text()
    assert "[red]x[/red]" in text and "[bold]t" in text


def test_markdown_and_html_escape_names(tmp_path):
    data = json.loads(NF4_RUN.read_text())
    data["config"]["qeval"]["spec"] = "<script>alert(1)</script>"
    data["results"]["a|b\nc *d* [e](f) `g`"] = data["results"].pop("qeval_demo_facts")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    runs, warnings = load_runs([path])
    report = compare(runs, warnings=warnings)
    markdown = export(report, "markdown", tmp_path / "r.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| run"))
    # one table row: the newline is an escape, | * [ ] ` < > cannot make markup or cells
    assert "a\\|b\\\\nc \\*d\\* \\[e\\](f) \\`g\\`" in header
    assert header.count(" | ") == len(report.comparisons[0].tasks) + 5  # columns + 1
    assert "\\<script\\>alert(1)\\</script\\>" in markdown and "<script>" not in markdown
    page = export(report, "html", tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_csv_neutralises_formulas_but_keeps_numbers(tmp_path):
    paths = []
    for source in (NONE_RUN, NF4_RUN):
        data = json.loads(source.read_text())
        data["config"]["model_args"]["pretrained"] = "@SUM(A1:A9)"
        data["results"]["+cmd|' /C calc'!A0"] = data["results"].pop("qeval_demo_facts")
        data["results"]["-2+3"] = data["results"].pop("qeval_demo_ppl")
        data["n-shot"] = {task: 0 for task in data["results"]}
        paths.append(tmp_path / source.parent.name / "results.json")
        paths[-1].parent.mkdir()
        paths[-1].write_text(json.dumps(data))
    data["config"]["qeval"]["spec"] = '=HYPERLINK("http://evil.example","x")'
    data["results"]["qeval_sqnr"]["logit_sqnr_db,none"] = "-inf"
    paths[-1].write_text(json.dumps(data))
    runs, warnings = load_runs(paths)
    written = export(compare(runs, warnings=warnings), "csv", tmp_path / "r.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(written)))
    assert {row["model"] for row in rows} == {"'@SUM(A1:A9)"}
    assert '\'=HYPERLINK("http://evil.example","x")' in {row["run"] for row in rows}
    tasks = {row["task"] for row in rows}
    assert "'+cmd|' /C calc'!A0" in tasks and "'-2+3" in tasks
    for row in rows:  # every cell: no formula start unless it is a number
        for value in row.values():
            if value[:1] in ("=", "+", "-", "@"):
                float(value)  # -0.2, -inf: numbers stay numbers
    (facts,) = [r for r in rows if r["task"] == "'+cmd|' /C calc'!A0" and r["delta"]]
    assert float(facts["delta"]) == pytest.approx(-0.2)  # 0.60 − 0.80
    assert {r["value"] for r in rows if r["task"] == "qeval_sqnr"} == {"inf", "-inf"}
    assert {(r["limit"], r["num_fewshot"]) for r in rows} == {("none", "0")}


# ---------------------------------------------------------------- charts and permissions


def two_models(tmp_path: Path, names: list[str], spec: str = "rtn:bits=4") -> list:
    """The bnb-nf4 fixture as a run of each model in ``names`` (labelled ``spec``)."""
    paths = []
    for index, name in enumerate(names):
        data = json.loads(NF4_RUN.read_text())
        data["config"]["model_args"]["pretrained"] = name
        data["config"]["qeval"]["spec"] = spec
        path = tmp_path / f"in{index}" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
        paths.append(path)
    return load_runs(paths)[0]


def test_chart_names_never_collide_or_overflow(tmp_path):
    long_name = "org/" + "m" * 300
    runs = two_models(tmp_path, ["org/m", "org_m", long_name], spec="$\\frac$ rtn")
    written = plot(compare(runs), tmp_path / "charts")
    names = [path.name for path in written]
    assert len(names) == len(set(names)) == 3 * 4  # 3 tasks + SQNR layers per model
    assert all(len(name.encode()) <= 255 for name in names)
    assert max(map(len, names)) < 200
    org = [n for n in names if re.fullmatch(r"org_m__qeval_demo_facts-[0-9a-f]{8}\.png", n)]
    assert len(org) == 2  # org/m and org_m: a hash each
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written)


def test_exports_and_charts_get_normal_permissions(tmp_path):
    runs, warnings = load_runs([NONE_RUN, NF4_RUN])
    report = compare(runs, warnings=warnings)
    previous = os.umask(0o022)
    try:
        files = [export(report, fmt, tmp_path / f"r.{fmt}") for fmt in ("markdown", "json")]
        files += plot(report, tmp_path / "charts")[:1]
        os.umask(0o027)
        files.append(export(report, "csv", tmp_path / "r.csv"))
    finally:
        os.umask(previous)
    modes = [stat.S_IMODE(path.stat().st_mode) for path in files]
    assert modes == [0o644, 0o644, 0o644, 0o640]
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left


# ---------------------------------------------------------------- 80 columns


def lines_at(report, width: int) -> list[str]:
    return text_of(report, width).splitlines()


@pytest.mark.parametrize("source", [DATA, DEMO], ids=["fixtures", "demo"])
def test_80_columns_never_break_a_word(source):
    """Per model: no line over 80 cells, and every task, metric and run label appears whole
    (today's layout folded them: ``qeval_dem/o_cloze``)."""
    runs, _ = load_runs([source])
    for model in {run.model for run in runs}:
        report = compare([run for run in runs if run.model == model])
        lines = lines_at(report, 80)
        assert max(map(len, lines)) <= 80
        words = set(re.findall(r"[^\s]+", "\n".join(lines)))
        (comparison,) = report.comparisons
        labels = [word for row in comparison.rows for word in row.run.label.split()]
        for name in [*comparison.tasks, *comparison.tasks.values(), *labels]:
            assert name in words, (model, name)


def test_wide_terminals_get_one_block_and_long_labels_their_own_line(tmp_path):
    runs = two_models(tmp_path, ["m"], spec="hf:dtype=bfloat16")
    runs += two_models(tmp_path / "b", ["m"], spec="rtn:bits=4:group_size=128:" + "x" * 90)
    report = compare(runs)
    narrow = lines_at(report, 80)
    assert max(map(len, narrow)) <= 80
    assert any(line.split()[:1] == ["hf:dtype=bfloat16"] for line in narrow)
    long_label = [line for line in narrow if line.startswith("rtn:bits=4:group_size=128")]
    assert long_label and all(re.fullmatch(r"\S+", line) for line in long_label)  # own line
    assert sum(line.startswith("run ") for line in narrow) >= 5  # some tables split in blocks
    wide = lines_at(report, 400)
    # summary, SQNR, per layer, worst: one block each
    assert sum(line.startswith("run ") for line in wide) == 4
    assert any("qeval_demo_facts" in line and "qeval_sqnr" in line for line in wide)


def test_thousands_of_tasks_lay_out_in_linear_time(tmp_path):
    """8,000 task columns at 160 columns: blocks of whole columns (the old width fitting took
    one step per cell given up: ~19 s); here every line fits and every task is shown once."""
    from qeval_plugins.report.runs import Metric

    runs = two_models(tmp_path, ["m", "m"], spec="none")[:1]
    runs[0].metrics = {f"task_{i:04d}": {"acc": Metric(0.5, 0.01, True)} for i in range(8000)}
    grid = summary_grid(compare(runs).comparisons[0])
    lines = grid_lines(grid, 160)
    texts = ["".join(text for text, _ in line) for line in lines]
    assert max(map(len, texts)) <= 160
    assert sum(text.count("task_") for text in texts) == 8000


# ---------------------------------------------------------------- command line


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_out_infers_the_format_from_its_extension(tmp_path, capsys):
    for name, check in [
        ("r.md", lambda t: t.startswith("# qeval report")),
        ("r.MARKDOWN", lambda t: t.startswith("# qeval report")),
        ("r.csv", lambda t: t.startswith("model,run,")),
        ("r.json", lambda t: "models" in json.loads(t)),
        ("r.htm", lambda t: t.startswith("<!DOCTYPE html>")),
    ]:
        code, out, err = run_cli(capsys, str(DATA), "-o", str(tmp_path / name))
        assert code == 0 and err == f"wrote {tmp_path / name}\n" and "wrote" not in out
        assert check((tmp_path / name).read_text()), name
    code, _, _ = run_cli(capsys, str(NONE_RUN), "--output", str(tmp_path / "o.html"))
    assert code == 0 and (tmp_path / "o.html").read_text().startswith("<!DOCTYPE html>")
    code, _, _ = run_cli(capsys, str(NONE_RUN), "--format", "csv", "--out", str(tmp_path / "x.md"))
    assert code == 0 and (tmp_path / "x.md").read_text().startswith("model,run,")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{data}", "--out", "{tmp}/r.xlsx"], "cannot tell the report format from '{tmp}/r.xlsx'"),
        (["{tmp}/nothing"], "{tmp}/nothing: no such file or folder; pass results files"),
        (["{data}", "--out", "{tmp}/no/such/r.md"], "{tmp}/no/such does not exist; create"),
        (["{data}", "-o", "{tmp}"], "{tmp} is a folder; name a file in it"),
        (["{data}", "--format", "json", "-o", "{tmp}"], "{tmp} is a folder"),
        (["{data}", "--baseline", "nf5"], "names no run in the report. Did you mean 'nf4'?"),
        (["{data}", "--baseline", "rtn:bits=5"], "--baseline rtn:bits=5 names no run in the"),
    ],
)
def test_bad_command_lines_are_one_error_line(tmp_path, capsys, argv, message):
    def fill(text: str) -> str:
        return text.format(data=DATA, tmp=tmp_path)

    code, out, err = run_cli(capsys, *map(fill, argv))
    assert code == 2
    assert err.startswith("qeval: error: ") and err.count("\n") == 1, err
    assert fill(message) in err
    assert out == ""  # checked before the report is printed
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_plot_with_a_300_character_model_name(tmp_path, capsys):
    runs_folder = tmp_path / "runs"
    two_models(runs_folder, ["/models/" + "q" * 300])
    code, out, err = run_cli(capsys, str(runs_folder), "--plot", str(tmp_path / "charts"))
    assert code == 0 and "wrote" not in out
    charts = sorted((tmp_path / "charts").iterdir())
    assert len(charts) == 4 and all(len(p.name) < 200 for p in charts)
    assert err.count("wrote ") == 4 and err.count("\n") == 4  # on stderr: stdout stays data


# ---------------------------------------------------------------- links, pipes and devices


def test_out_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, capsys):
    """The old export renamed a temporary file over the link itself."""
    target = tmp_path / "real" / "report.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, out, err = run_cli(capsys, str(NONE_RUN), "--out", str(link))
    assert code == 0 and err == f"wrote {link}\n"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["models"][0]["runs"][0]["label"] == "none"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real"]
    dangling = tmp_path / "new.md"
    dangling.symlink_to(tmp_path / "real" / "later.md")
    export(compare(load_runs([NONE_RUN])[0]), "markdown", dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "later.md").read_text().startswith("# ")
    gone = tmp_path / "gone.md"
    gone.symlink_to(tmp_path / "no" / "such" / "x.md")
    code, out, err = run_cli(capsys, str(NONE_RUN), "--out", str(gone))
    assert code == 2 and out == "" and f"{tmp_path}/no/such does not exist" in err


def test_out_to_a_fifo_writes_into_it(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    export(compare(load_runs([NONE_RUN])[0]), "json", fifo)
    reader.join(10)
    assert not reader.is_alive()
    assert json.loads(got[0])["models"][0]["model"] == "qeval-tiny"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left


def test_out_to_dev_null_and_dev_fd_1_keep_the_device(tmp_path, capfd):
    """/dev/null stays a character device; /dev/fd/1 (like /dev/stdout, a link into /proc: this
    process's stdout) gets the report alone, the table going to stderr; a socket is one error
    line.

    As root, the null device is a copy made in tmp_path (the old code replaced the device node
    with a file: a check on the old code must not break the machine's /dev/null)."""
    null = Path("/dev/null")
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.stat("/dev/null").st_rdev)
    before = null.lstat()
    assert main(["report", str(NONE_RUN), "--format", "json", "--out", str(null)]) == 0
    after = null.lstat()
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    capfd.readouterr()
    if not Path("/dev/fd/1").exists():
        pytest.skip("no /dev/fd")
    assert main(["report", str(NONE_RUN), "--format", "csv", "--out", "/dev/fd/1"]) == 0
    captured = capfd.readouterr()  # stdout is the CSV alone; the table went to stderr
    assert captured.out.startswith("model,run,is_baseline,backend,") and "wrote" not in captured.out
    assert len(list(csv.DictReader(io.StringIO(captured.out)))) == 3
    assert "qeval-tiny" in captured.err and "wrote" not in captured.err
    import socket

    where = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(where))
        code = main(["report", str(NONE_RUN), "--format", "json", "--out", str(where)])
    err = capfd.readouterr().err
    assert (
        code == 2
        and err
        == f"qeval: error: cannot write {where}: it is a socket; name a "
        "file, a pipe or a terminal\n"
    )


def test_out_dash_is_stdout_and_a_stream_without_format_asks_for_it(tmp_path, capfd, monkeypatch):
    """``--out -`` wrote a file named "-"; ``--out /dev/stdout`` put "wrote /dev/stdout" into the
    data; ``--out /dev/null`` without --format said to rename it."""
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(NONE_RUN), "--format", "json", "--out", "-"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["models"][0]["model"] == "qeval-tiny"  # stdout: JSON alone
    assert "qeval-tiny" in captured.err and "wrote" not in captured.err
    assert list(tmp_path.iterdir()) == []  # no file named "-"
    for stream in ("-", "/dev/null"):
        assert main(["report", str(NONE_RUN), "--out", stream]) == 2
        assert capfd.readouterr() == (
            "",
            f"qeval: error: --out {stream} is standard output, a pipe or a device, whose name "
            "sets no format; pass --format {markdown,csv,json,html}\n",
        )
    assert main(["report", str(NONE_RUN), "--format", "csv", "--out", "./-"]) == 0  # a file
    assert (tmp_path / "-").read_text().startswith("model,run,")
    assert capfd.readouterr().err == f"wrote {tmp_path}/-\n"


# ---------------------------------------------------------------- chart texts


def texts_outside(figure) -> list[str]:
    """The title of each axes whose drawn texts (title, tick labels in view, axis labels,
    legend: its tight box) reach past the figure's edges by more than a pixel, drawn at the
    PNG's resolution."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(110)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    edge = figure.bbox
    outside = []
    for axes in figure.axes:
        box = axes.get_tightbbox(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > edge.x1 + 1 or box.y1 > edge.y1 + 1:
            outside.append(figure.get_suptitle())
    return outside


def test_long_names_stay_inside_every_chart(tmp_path):
    """A 300-character model name ran off the PNG in the title; long task names, metric names
    and run labels (tick labels, y label, legend) must fit too."""
    from qeval_plugins.report.plot import charts

    runs = two_models(tmp_path, ["/models/" + "q" * 300, "org/" + "Llama-3.1-8B-Instruct-" * 6])
    for run in runs:
        metric = run.metrics["qeval_demo_facts"]["acc"]
        run.metrics = {"a_very_long_task_name_" * 6: {"accuracy_of_a_long_metric_" * 3: metric}}
        run.label = run.label + ":group_size=128:scheme=asymmetric:calibration=" + "c4_" * 12
    report = compare(runs + load_runs([DATA / "qeval-tiny"])[0])
    made = list(charts(report))
    assert len(made) >= 8
    for name, figure in made:
        assert texts_outside(figure) == [], name
        title = figure.get_suptitle()
        assert "…" in title or title.startswith("qeval-tiny · "), title


def test_paths_without_runs_are_an_error_but_not_for_a_sweep(tmp_path, capsys):
    """An empty folder or an unreadable file printed "No runs to report." and exited 0."""
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "r.md"))
    assert (code, out) == (1, "")
    assert err == (
        f"qeval: error: no lm-eval results files (results*.json) in {tmp_path}/empty; pass the "
        "folder that lm_eval --output_path or qeval run --output wrote, or its results*.json "
        "files\n"
    )
    (tmp_path / "empty" / "results.json").write_text("")
    code, out, err = run_cli(capsys, str(tmp_path / "empty"), str(tmp_path / "empty"))
    assert code == 1 and "; skipped" in out and "No runs" not in out
    assert err.count("\n") == 1 and err.startswith(
        f"qeval: error: no runs to report: the results file in {tmp_path}/empty, "
        f"{tmp_path}/empty could not be read (see the warnings); pass the folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no report written
    from qeval_plugins.cli.report import print_report  # what qeval run prints after a sweep

    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    report = print_report([tmp_path / "empty"], None, console)
    assert report.comparisons == [] and "No runs to report." in console.export_text()
