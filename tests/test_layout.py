"""The package's layers: what each may import, and that ``qeval report`` needs no model library.

Layers, bottom up (README "How it works"): ``formats`` and ``metrics`` import nothing of
qeval's; ``core`` only itself and formats; ``storage`` core; ``quantizers`` core (through the
public ``qeval_plugins`` names) and formats; ``backend`` core, formats, storage, metrics;
``evals`` those and the backend; ``report`` core, formats, metrics, storage — never the backend,
the evals, torch, transformers or lm-eval at module level; ``predict`` (the damage predictor) those,
the backend and the report's run readers; ``sweep`` (``qeval run``'s engine and launchers) core,
formats, storage, metrics and the backend; ``cli`` and ``study`` (the seed study, which drives
sweeps) anything. Every layer but metrics may import formats, whose table lists the formats
without torch. Every import is checked, also those inside functions, and a public name of
``qeval_plugins`` counts as the layer that defines it: the facade is no way around the layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qeval_plugins"
TESTS = Path(__file__).resolve().parent

# layer -> the qeval layers it may import ("" = the top-level modules such as paths; a public
# name of qeval_plugins/__init__.py counts as the layer of the module that defines it)
ALLOWED = {
    "formats": {"formats"},
    "metrics": {"metrics"},
    "core": {"core", "formats"},
    "storage": {"core", "formats", "storage"},
    "quantizers": {"", "core", "formats", "quantizers"},
    "backend": {"", "core", "formats", "storage", "metrics", "backend"},
    "evals": {"", "core", "formats", "storage", "metrics", "backend", "evals"},
    "report": {"", "core", "formats", "storage", "metrics", "report"},
    "predict": {"", "core", "formats", "storage", "metrics", "backend", "report", "predict"},
    "sweep": {"", "core", "formats", "storage", "metrics", "backend", "sweep"},
}
HEAVY = ("torch", "transformers", "lm_eval", "bitsandbytes", "datasets", "matplotlib")


def public_names() -> dict[str, str]:
    """Public name of ``qeval_plugins`` -> its defining module (``__init__``'s ``_PUBLIC``)."""
    for node in ast.parse((PACKAGE / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_PUBLIC":
            return ast.literal_eval(node.value)
    raise AssertionError("qeval_plugins/__init__.py has no _PUBLIC map")


PUBLIC = public_names()


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import of ``path``; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = ".".join(("qeval_plugins", *path.relative_to(PACKAGE).parent.parts))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base == "qeval_plugins":  # from qeval_plugins import core / Quantizer
                found += [(f"qeval_plugins.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
        elif isinstance(node, ast.Attribute) and ast.unparse(node.value) == "qeval_plugins":
            found.append((f"qeval_plugins.{node.attr}", node.lineno))  # qeval_plugins.FORMATS
    return found


def qeval_layer(module: str) -> str | None:
    """The layer a ``qeval_plugins...`` module belongs to, that of its defining module for a
    public name (``qeval_plugins.Quantizer``: core), "" for a top-level module; else None (also
    for the bare package, whose names are checked where they are read)."""
    if not module.startswith("qeval_plugins."):
        return None
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in PUBLIC:
        return qeval_layer(PUBLIC[parts[1]])
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_run_down_the_layers(path):
    layer = layer_of(path)
    wrong = [
        f"line {line}: {module}"
        for module, line in imports(path)
        if qeval_layer(module) is not None and qeval_layer(module) not in ALLOWED[layer]
    ]
    assert not wrong, f"{layer} may import only {sorted(ALLOWED[layer])}: {wrong}"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_plugin_contract_is_imported_through_the_public_names(path):
    """Inside the package, ``from qeval_plugins import ...`` is the plugin contract's route (core's
    names, which the built-in quantizers import as a third-party plugin does); anything else,
    the number formats above all, is imported from where it lives (``qeval_plugins.formats``)."""
    through = [
        f"line {line}: {module} (from {PUBLIC[module.split('.')[1]]})"
        for module, line in imports(path)
        if module.count(".") == 1
        and module.split(".")[1] in PUBLIC
        and qeval_layer(module) != "core"
    ]
    assert not through, f"import these from their own module: {through}"


def module_file(module: str, package: Path) -> Path | None:
    """The file that holds ``module`` (its nearest existing module: ``a.b.NAME`` -> ``a/b.py``)
    under ``package``; None outside it or for the facade ``qeval_plugins`` itself, whose public
    names are followed to their defining module."""
    parts = module.split(".")
    if parts[0] != "qeval_plugins" or len(parts) < 2:
        return None
    if len(parts) == 2 and parts[1] in PUBLIC:
        return module_file(PUBLIC[parts[1]], package)
    for end in range(len(parts), 1, -1):
        base = package.joinpath(*parts[1:end])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imported_names(path: Path, package: Path) -> list[str]:
    """Every dotted name ``path`` imports, a ``from X import y`` as ``X.y`` (``y`` may be a
    submodule of ``X``; :func:`module_file` falls back to ``X`` when it is not)."""
    anchor = ".".join(("qeval_plugins", *path.relative_to(package).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                start = anchor.rsplit(".", node.level - 1)[0] if node.level > 1 else anchor
                base = f"{start}.{base}" if base else start
            names += [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and ast.unparse(node.value) == "qeval_plugins":
            names.append(f"qeval_plugins.{node.attr}")
    return names


def import_circles(package: Path) -> list[list[str]]:
    """Every set of two or more modules under ``package`` that import one another in a loop
    (Tarjan's strongly connected components over every import, inside functions and
    ``TYPE_CHECKING`` blocks too), as sorted relative paths."""
    files = sorted(package.rglob("*.py"))
    edges = {
        path: {
            target
            for module in imported_names(path, package)
            if (target := module_file(module, package)) is not None and target != path
        }
        for path in files
    }
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    circles = []

    def visit(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1:
                circles.append(sorted(str(m.relative_to(package)) for m in component))

    for path in files:
        if path not in index:
            visit(path)
    return sorted(circles)


def test_no_modules_import_each_other_in_a_circle():
    assert import_circles(PACKAGE) == []


def test_the_circle_check_finds_a_loop_through_a_function_level_import(tmp_path):
    package = tmp_path / "qeval_plugins"
    (package / "report").mkdir(parents=True)
    (package / "report" / "a.py").write_text("from qeval_plugins.report.b import B\n")
    (package / "report" / "b.py").write_text("def f():\n    from qeval_plugins.report import c\n")
    (package / "report" / "c.py").write_text("from . import a\n")
    (package / "report" / "d.py").write_text("from qeval_plugins.report import a\n")
    assert import_circles(package) == [["report/a.py", "report/b.py", "report/c.py"]]


def test_the_formats_table_lists_them_without_torch():
    """Quantizers declare the formats as option choices at registration, which must stay light."""
    code = (
        "import sys\n"
        "from qeval_plugins.formats.groups import effective_bits\n"
        "from qeval_plugins.formats.table import FORMATS\n"
        "assert len(FORMATS) > 10 and effective_bits('mxfp4') == 4.25\n"
        f"print([name for name in {HEAVY!r} if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "report").rglob("*.py")),
    ids=lambda p: p.name,
)
def test_report_modules_import_no_model_library_at_module_level(path):
    heavy = [m for m, _ in imports(path, top_level_only=True) if m.split(".")[0] in HEAVY]
    assert not heavy, heavy


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself, on a copy of the tree: a metrics module importing the backend (inside a
    function), and one importing its own layer relatively, which is allowed; a formats module
    reaching core through a public name."""
    probe = tmp_path / "qeval_plugins" / "metrics" / "probe.py"
    probe.parent.mkdir(parents=True)
    for layer in ("backend", "core", "formats"):
        (tmp_path / "qeval_plugins" / layer).mkdir()
    probe.write_text("def f():\n    from qeval_plugins.backend import lm\n    from . import text\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "qeval_plugins")
    with pytest.raises(AssertionError, match=r": \['line 2: qeval_plugins\.backend'\]"):
        test_imports_only_run_down_the_layers(probe)
    facade = tmp_path / "qeval_plugins" / "formats" / "probe.py"
    facade.write_text("import qeval_plugins\nerror = qeval_plugins.QevalError\n")
    with pytest.raises(AssertionError, match=r"formats may .*'line 2: qeval_plugins\.QevalError'"):
        test_imports_only_run_down_the_layers(facade)


def test_the_facade_check_catches_a_format_imported_through_it(tmp_path, monkeypatch):
    probe = tmp_path / "qeval_plugins" / "quantizers" / "probe.py"
    for layer in ("quantizers", "core", "formats"):
        (tmp_path / "qeval_plugins" / layer).mkdir(parents=True)
    probe.write_text(
        "from qeval_plugins import Quantizer, quantize_dequantize\n"
        "from qeval_plugins.formats.table import FORMATS\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "qeval_plugins")
    expected = r"\['line 1: qeval_plugins\.quantize_dequantize \(from qeval_plugins\.formats\."
    with pytest.raises(AssertionError, match=expected):
        test_only_the_plugin_contract_is_imported_through_the_public_names(probe)


def test_engines_use_the_backends_public_api_only():
    """No module outside the backend reads the lm's private ``self._qeval_*`` state."""
    lm_source = ast.parse((PACKAGE / "backend" / "lm.py").read_text())
    state = {
        node.attr
        for node in ast.walk(lm_source)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_qeval")
    }
    assert {"_qeval_plan", "_qeval_load_args"} <= state
    private = []
    for path in PACKAGE.rglob("*.py"):
        if layer_of(path) == "backend":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in state:
                private.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert not private


def test_qeval_report_runs_without_any_model_library():
    """With torch, transformers, lm-eval, bitsandbytes and datasets made unimportable."""
    code = (
        "import sys\n"
        f"for name in {HEAVY[:-1]!r}:\n"
        "    sys.modules[name] = None\n"
        "from qeval_plugins.cli.main import main\n"
        f"sys.exit(main(['report', {str(TESTS / 'data' / 'report')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rtn:bits=4" in result.stdout


def test_tests_mirror_the_package():
    """Every layer has its own test folder."""
    for layer in ALLOWED.keys() | {"cli"}:
        assert any((TESTS / layer).glob("test_*.py")), f"tests/{layer}/ has no tests"


def test_test_files_have_unique_names():
    """tests/ has no __init__.py files, so pytest imports each test file by its basename: two of
    one name stop the whole suite at collection."""
    names = [path.name for path in TESTS.rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
