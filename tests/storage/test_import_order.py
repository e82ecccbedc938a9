"""The storage modules import one another in one direction: no circle, also through imports
inside functions (``cache_layout`` at the bottom, the two caches on top)."""

from __future__ import annotations

import ast
from pathlib import Path

STORAGE = Path(__file__).resolve().parents[2] / "qeval_plugins" / "storage"
PACKAGE = "qeval_plugins.storage"


def storage_imports(path: Path, modules: set[str]) -> set[str]:
    """The storage modules (names of ``modules``) that ``path`` imports, anywhere in the file:
    ``from qeval_plugins.storage import x``, ``from qeval_plugins.storage.x import y``,
    ``import qeval_plugins.storage.x`` and the relative forms."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{PACKAGE}.{base}" if base else PACKAGE
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name.removeprefix(f"{PACKAGE}.") for name in names} & modules
    return found - {path.stem}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of ``graph`` (module -> modules it imports), once per entry module,
    as the path that closes it: ``[a, b, a]``."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, path = stack.pop()
            for imported in sorted(graph[module]):
                if imported == start:
                    found.append([*path, start])
                elif imported not in seen:
                    seen.add(imported)
                    stack.append((imported, [*path, imported]))
    return found


def storage_graph(folder: Path) -> dict[str, set[str]]:
    modules = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
    return {name: storage_imports(folder / f"{name}.py", modules) for name in modules}


def test_storage_modules_import_one_another_without_a_circle():
    graph = storage_graph(STORAGE)
    assert {"reference_cache", "model_cache", "cache_pruning", "cache_layout"} <= set(graph)
    assert graph["cache_layout"] == set()
    assert circles(graph) == []


def test_the_check_finds_a_circle_closed_inside_a_function(tmp_path):
    """The shape this package had: one cache importing the other at module level, and the
    other importing it back inside a function."""
    (tmp_path / "cache.py").write_text("from qeval_plugins.storage import model_cache\n")
    (tmp_path / "model_cache.py").write_text(
        "def save():\n    from qeval_plugins.storage import cache as caches\n"
    )
    (tmp_path / "atomic.py").write_text("from . import locks\n")
    (tmp_path / "locks.py").write_text("")
    graph = storage_graph(tmp_path)
    assert graph == {
        "cache": {"model_cache"},
        "model_cache": {"cache"},
        "atomic": {"locks"},
        "locks": set(),
    }
    assert circles(graph) == [
        ["cache", "model_cache", "cache"],
        ["model_cache", "cache", "model_cache"],
    ]
