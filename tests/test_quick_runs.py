"""`python benchmarks/run_all.py --quick` leaves every full result as it was.

Read, not run: run_all passes --quick to every script, and each script (and the benchmark modules
it imports) names every path under ``results/`` through the quick-aware logic (``results_name``,
a ``quick`` / ``full`` cache folder, ``publish(quick=...)``), so a quick run writes ``-quick``
files only; the README is rewritten only when not quick. The one exception, listed in SHARED,
is a cache whose cells are the same commands in both modes."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import run_all  # noqa: E402  (benchmarks/ is a folder of scripts, not a package; importing runs nothing)

# results/<folder> a quick run may add cells to, and why that leaves the full results as they were
SHARED = {
    ("distill_checks.py", "distill_checks"): "--quick runs a subset of the same commands (same seeds): a cell it adds "
    "is the one the full run computes, and it reads existing cells without rewriting them",
    ("multitask.py", "multitask"): "seed 0's run is the same in both modes",
    ("common.py", "code"): "code maps are content-addressed (code_trace.py): a quick run may add one, "
    "and never rewrites one",
}
WRITERS_OF_README = ("replace_between_markers",)


def _modules() -> dict[str, ast.Module]:
    """run_all and every script it runs, plus the benchmark modules they import."""
    names = [script for script, _, _ in run_all.SCRIPTS] + ["run_all.py"]
    trees: dict[str, ast.Module] = {}
    while names:
        name = names.pop()
        if name in trees:
            continue
        trees[name] = ast.parse((BENCHMARKS / name).read_text(), filename=name)
        for node in ast.walk(trees[name]):
            if isinstance(node, ast.ImportFrom) and node.module and (BENCHMARKS / f"{node.module}.py").is_file():
                names.append(f"{node.module}.py")
    return trees


MODULES = _modules()


def _mentions_quick(node: ast.AST, quick_names: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and ("quick" in sub.id or sub.id in quick_names):
            return True
        if isinstance(sub, ast.Attribute) and "quick" in sub.attr:
            return True
    return False


def _quick_names(tree: ast.Module) -> set[str]:
    """Names bound anywhere in the module to a quick-aware value (``stem = results_name(...)``)."""
    names, changed = {"results_name"}, True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _mentions_quick(node.value, names):
                for target in node.targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name) and sub.id not in names:
                            names.add(sub.id)
                            changed = True
    return names


def _parents(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _results_paths(tree: ast.Module) -> list[tuple[ast.BinOp, list[ast.expr]]]:
    """Every whole ``RESULTS_DIR / a / b ...`` expression, with its parts after RESULTS_DIR."""
    parents, paths = _parents(tree), []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div) and parent.left is node:
            continue  # part of a longer path
        parts, left = [], node
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div):
            parts.insert(0, left.right)
            left = left.left
        if isinstance(left, ast.Name) and left.id == "RESULTS_DIR":
            paths.append((node, parts))
    return paths


def _enclosing(node: ast.AST, parents: dict[ast.AST, ast.AST], kind: type) -> list[ast.AST]:
    found = []
    while node in parents:
        node, child = parents[node], node
        if isinstance(node, kind):
            found.append((node, child))
    return found


def _skipped_when_quick(node: ast.AST, tree: ast.Module, quick_names: set[str]) -> bool:
    """Inside ``if <quick>: ... else: <node>`` or ``if not <quick>: <node>``."""
    for branch, child in _enclosing(node, _parents(tree), ast.If):
        negated = isinstance(branch.test, ast.UnaryOp) and isinstance(branch.test.op, ast.Not)
        if _mentions_quick(branch.test, quick_names) and (child in branch.orelse) != negated:
            return True
    return False


def test_run_all_passes_quick_to_every_script():
    for script, passes_quick, _ in run_all.SCRIPTS:
        assert passes_quick, f"run_all --quick would run {script} in full mode"
        calls = [node for node in ast.walk(MODULES[script]) if isinstance(node, ast.Call)]
        takes_quick = any(
            getattr(call.func, "id", None) == "parse_quick_args"
            or any(isinstance(arg, ast.Constant) and arg.value == "--quick" for arg in call.args)
            for call in calls
        )
        assert takes_quick, f"{script} has no --quick option"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_results_path_is_named_for_its_mode(module):
    tree = MODULES[module]
    quick_names = _quick_names(tree)
    for node, parts in _results_paths(tree):
        if any(_mentions_quick(part, quick_names) for part in parts):
            continue
        first = parts[0].value if parts and isinstance(parts[0], ast.Constant) else None
        if (module, first) in SHARED:
            continue
        if _skipped_when_quick(node, tree, quick_names) or _only_called_when_not_quick(module, node):
            continue
        pytest.fail(f"{module}:{node.lineno}: `{ast.unparse(node)}` is the same path in a quick and a full run")


def _only_called_when_not_quick(module: str, node: ast.AST) -> bool:
    """``node`` sits in a function every call of which (in its module) is skipped when quick."""
    tree = MODULES[module]
    functions = _enclosing(node, _parents(tree), ast.FunctionDef)
    if not functions:
        return False
    name = functions[-1][0].name
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]
    return bool(calls) and all(_skipped_when_quick(call, tree, _quick_names(tree)) for call in calls)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_publish_gets_the_mode_and_the_readme_is_left_when_quick(module):
    tree = MODULES[module]
    quick_names, parents = _quick_names(tree), _parents(tree)
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name = getattr(call.func, "id", None)
        if name == "publish":
            quick = [kw.value for kw in call.keywords if kw.arg == "quick"]
            assert quick and _mentions_quick(quick[0], quick_names), f"{module}:{call.lineno}: publish without quick="
        if name in WRITERS_OF_README and not _skipped_when_quick(call, tree, quick_names):
            assert _readme_is_none_when_quick(module, call, parents), (
                f"{module}:{call.lineno}: the README is rewritten by a quick run"
            )


def _readme_is_none_when_quick(module: str, call: ast.Call, parents: dict[ast.AST, ast.AST]) -> bool:
    """``replace_between_markers(readme, ...)`` under ``if readme is not None`` in a function
    whose every caller passes ``None if <quick> else ...`` for ``readme`` (vs_imitation's report);
    or common.publish, whose README write is skipped when quick (test_benchmarks_common runs it)."""
    functions = _enclosing(call, parents, ast.FunctionDef)
    function = functions[-1][0] if functions else None
    if function is None:
        return False
    if module == "common.py" and function.name in ("publish", "replace_between_markers"):
        return True
    params = [arg.arg for arg in function.args.args]
    readme = call.args[0].id if call.args and isinstance(call.args[0], ast.Name) else None
    if readme not in params:
        return False
    position, passed = params.index(readme), []
    for tree in MODULES.values():
        for caller in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if getattr(caller.func, "id", None) == function.name:
                by_name = [kw.value for kw in caller.keywords if kw.arg == readme]
                passed += by_name or caller.args[position : position + 1]
    return bool(passed) and all(
        isinstance(arg, ast.IfExp)
        and isinstance(arg.body, ast.Constant)
        and arg.body.value is None
        and _mentions_quick(arg.test, set())
        for arg in passed
    )


def test_a_quick_run_all_writes_only_its_own_timing(tmp_path, monkeypatch):
    """run_all --quick with every script replaced by a no-op: each gets --quick, and the only file
    written is results/run_all-quick.json (RESULTS.md stays as it was)."""
    import subprocess

    commands = []
    monkeypatch.setattr(run_all, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(
        subprocess, "run", lambda command: commands.append(command) or subprocess.CompletedProcess(command, 0)
    )
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick"])
    with pytest.raises(SystemExit) as exit_:
        run_all.main()
    assert exit_.value.code == 0
    assert [Path(c[1]).name for c in commands] == [script for script, _, _ in run_all.SCRIPTS]
    assert all(c[2:] == ["--quick"] for c in commands)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["results/run_all-quick.json"]
