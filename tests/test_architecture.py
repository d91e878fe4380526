"""The layout's rules, read from the source (no import is run): prescore's families in
layers, no import cycles, jobs/, lookup/ and fallback/ apart, the lookup free of TensorFlow
and Spark, and the encoding family free of I/O."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("prescore", "jobs", "lookup", "fallback")
# prescore's families, lowest first: a module imports its own family and lower layers only.
LAYERS = (
    {"prescore.errors", "prescore.logs", "prescore.ports", "prescore.progress"},
    {"prescore.env"},
    {"prescore.encoding"},
    {"prescore.data"},
    {"prescore.settings"},
    {"prescore.store", "prescore.models", "prescore.service"},
    {"prescore.publishing"},
    {"prescore.api"},
    {"prescore.cli"},
)
IO_MODULES = {
    *("os", "io", "pathlib", "shutil", "tempfile", "socket", "subprocess", "urllib.request"),
    *("redis", "requests", "httpx", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.fs"),
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for part in PARTS for p in sorted((ROOT / part).rglob("*.py"))}


def _imports(module: str, *, at_import: bool) -> Iterator[str]:
    """What ``module`` imports: every import, or (``at_import``) those run when it is
    imported (not inside functions, nor under ``if TYPE_CHECKING``)."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = [n for n in tree.body if not isinstance(n, ast.If)] if at_import else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in MODULES else node.module


def _family(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "prescore" and len(parts) > 1 else parts[0]


def _layer(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if _family(module) in layer)


def test_every_prescore_module_is_in_a_layer() -> None:
    for module in MODULES:
        if module.startswith("prescore."):
            assert any(_family(module) in layer for layer in LAYERS), module


def test_prescore_families_import_only_their_own_and_lower_layers() -> None:
    wrong = [
        f"{m} imports {i}"
        for m in MODULES
        if m.startswith("prescore.")
        for i in _imports(m, at_import=False)
        if i.startswith("prescore.") and _family(i) != _family(m) and _layer(i) >= _layer(m)
    ]
    assert not wrong, wrong


def test_no_import_cycles() -> None:
    graph = {m: {i for i in _imports(m, at_import=True) if i in MODULES} for m in MODULES}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for i in sorted(graph[m]):
            assert state.get(i) != 1, " -> ".join([*path[path.index(i) :], i])
            if i not in state:
                visit(i, [*path, i])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("part", ["prescore", "jobs", "lookup", "fallback"])
def test_the_parts_import_only_the_shared_core(part: str) -> None:
    others = set(PARTS) - {part, "prescore"} | (
        {"jobs", "lookup", "fallback"} if part == "prescore" else set()
    )
    wrong = [
        f"{m} imports {i}"
        for m in MODULES
        if m.split(".")[0] == part
        for i in _imports(m, at_import=False)
        if i.split(".")[0] in others
    ]
    assert not wrong, wrong


def _reached(start: set[str]) -> set[str]:
    """Every module ``start`` reaches by its imports, ours and others' (named, not run)."""
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in MODULES:
            todo += _imports(m, at_import=False)
    return seen


def test_the_lookup_never_reaches_tensorflow_or_spark() -> None:
    reached = _reached({m for m in MODULES if m.split(".")[0] == "lookup"})
    heavy = sorted(m for m in reached if m.split(".")[0] in {"tensorflow", "pyspark", "keras"})
    assert not heavy


def test_the_encoding_family_does_no_io() -> None:
    encoding = {m for m in MODULES if _family(m) == "prescore.encoding"}
    reached = _reached(encoding)
    assert not sorted(
        m for m in reached if m in IO_MODULES or m.split(".")[0] in {"redis", "httpx"}
    )
    assert reached & MODULES.keys() <= encoding | {"prescore.errors"}
