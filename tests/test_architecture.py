"""The house, checked from the code itself (docs/design.md): the layers (import-linter's contracts in
setup.cfg), no import cycles counting imports inside functions (grimp's graph, import-linter's own
reader), few function-level imports of the project's own modules, stage kinds named only by their
table, and modules of a readable length."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from jobs.contract import KINDS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("launcher", "jobs")
SOURCE_DIRS = ("launcher", "jobs", "tools")   # everything but the tests
MAX_MODULE_LINES = 500
MAX_OWN_FUNCTION_IMPORTS = 5
CLI_ENTRY = "launcher/app/cli.py"              # defers the commands module, so `minitron --help` stays fast
KIND_TABLE = "jobs/contract/kinds.py"
KIND_NAMES = {k.name for k in KINDS}
KIND_ONLY = KIND_NAMES - {"data", "prune", "distill", "report", "export", "probe"}  # names no section shares


def sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_the_layer_contracts_hold():
    """In a process of its own: import-linter configures logging with `dictConfig`, which turns off every
    logger that exists (megatron's too, where a job test imported it) and reads setup.cfg from the cwd."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename='setup.cfg', no_cache=True))"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_import_cycles_counting_imports_inside_functions():
    graph = grimp.build_graph(*PACKAGES)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] in PACKAGES}
             for m in graph.modules}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def _function_level_imports(tree: ast.AST) -> list[ast.AST]:
    found = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child, inside)

    walk(tree, False)
    return found


def _own(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(alias.name.split(".")[0] in PACKAGES for alias in node.names)


def test_few_function_level_imports_of_the_project_s_own_modules():
    """Imports inside functions hide the real dependencies; they are for heavy third-party modules (torch,
    NeMo: deferred so a config error exits before them) and the CLI's deferred commands."""
    found = [f"{rel(p)}:{n.lineno}" for p in sources() if rel(p) != CLI_ENTRY
             for n in _function_level_imports(ast.parse(p.read_text())) if _own(n)]
    assert len(found) <= MAX_OWN_FUNCTION_IMPORTS, found


def _names_a_kind(node: ast.AST) -> bool:
    """A comparison with a kind's name (`kind == "prune"`, `kind in ("finetune", "distill")`, `name.startswith`
    does not count), or a literal keyed by kind names."""
    def kinds_in(expr: ast.AST) -> set[str]:
        items = expr.elts if isinstance(expr, (ast.Tuple, ast.List, ast.Set)) else [expr]
        return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)} & KIND_NAMES

    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        about_kinds = any("kind" in ast.unparse(side).lower() for side in sides)
        return about_kinds and any(kinds_in(side) for side in sides)
    if isinstance(node, ast.Dict):
        keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        return len(keys & KIND_NAMES) >= 2 and bool(keys & KIND_ONLY)
    return False


def test_only_the_kind_table_names_stage_kinds():
    """What a kind is lives in one table; everything else asks it (adding a kind is one entry plus its job)."""
    branching = sorted({rel(p) for p in sources() for node in ast.walk(ast.parse(p.read_text()))
                        if _names_a_kind(node)} - {KIND_TABLE})
    assert branching == [], branching


def test_the_checker_sees_kind_branching():
    """The check above can fail: it finds the kind comparisons and kind-keyed literals of old."""
    for code in ('if node.kind == "prune": pass', 'ok = sp.kind in ("finetune", "distill")',
                 'TAGS = {"prune": "pr-", "finetune": "ft-"}'):
        assert any(_names_a_kind(node) for node in ast.walk(ast.parse(code))), code
    assert not any(_names_a_kind(node) for node in ast.walk(ast.parse('if section == "data": pass')))
    lazy = ast.parse("def f():\n    from launcher.runs import status\n    import torch\n")
    assert [_own(n) for n in _function_level_imports(lazy)] == [True, False]


def test_modules_stay_readable():
    long = {rel(p): n for p in sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long
