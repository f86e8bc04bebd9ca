"""The package's shape, as issue 15 set it: no import cycle between our modules, no function over
60 lines, no block of six or more lines written twice, and the layers importing downwards only."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "policykd"
MAX_FUNCTION_LINES = 60
MIN_DUPLICATE_LINES = 6


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere (lazy imports in functions too), leaving out
    ``if TYPE_CHECKING:`` blocks, which never run."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in candidates if name in known)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items() if not name.endswith("__init__")}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:  # a package's __init__
                continue
            if state[nxt] == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_our_modules():
    assert _find_cycle(_import_graph()) is None, " -> ".join(_find_cycle(_import_graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


BASE = {"policykd.types", "policykd.errors", "policykd.checks", "policykd.fileio"}


def test_the_base_modules_use_nothing_of_ours_but_each_other():
    graph = _import_graph()
    for module in BASE:
        assert graph[module] <= BASE, f"{module} imports {graph[module] - BASE}"


def test_data_and_learn_never_import_the_job_layer_or_the_cli():
    graph = _import_graph()
    for module, imported in graph.items():
        if module.startswith(("policykd.data.", "policykd.learn.")):
            upward = {m for m in imported if m.startswith(("policykd.jobs", "policykd.cli"))}
            assert not upward, f"{module} imports {upward}"


def _functions() -> list[tuple[int, str]]:
    rows = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n_lines = node.end_lineno - node.lineno + 1
                rows.append((n_lines, f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"))
    return rows


def test_no_function_is_over_sixty_lines():
    long = sorted((n, where) for n, where in _functions() if n > MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the lines that carry code: no blank, comment-only or
    bracket-only lines, which every file shares."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if (
            text
            and not text.startswith("#")
            and text.strip("()[]{},:")
            and not text.startswith(('"""', "from ", "import "))
        ):
            rows.append((number, text))
    return rows


def duplicate_blocks(paths: list[Path], n: int = MIN_DUPLICATE_LINES) -> list[str]:
    """Places where ``n`` consecutive code lines appear twice (in one file or two), as text."""
    seen: dict[tuple[str, ...], str] = {}
    found = []
    for path in paths:
        lines = _code_lines(path)
        last_reported = -1
        for i in range(len(lines) - n + 1):
            window = tuple(text for _, text in lines[i : i + n])
            where = f"{path.relative_to(PACKAGE.parent)}:{lines[i][0]}"
            if window in seen and i > last_reported:
                found.append(f"{where} repeats {seen[window]}")
                last_reported = i + n - 1
            seen.setdefault(window, where)
    return found


def test_no_block_of_six_code_lines_is_written_twice():
    assert duplicate_blocks(list(_modules().values())) == []


def test_the_duplicate_finder_finds_a_copy(tmp_path):
    body = "\n".join(f"x{i} = compute({i})" for i in range(6))
    (tmp_path / "a.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "b.py").write_text(f"def g():\n{body}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(__import__(__name__), "PACKAGE", tmp_path)
        assert len(duplicate_blocks([tmp_path / "a.py", tmp_path / "b.py"])) == 1
