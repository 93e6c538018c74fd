"""The architecture, checked: layers that import only downwards (with at most two documented exceptions), no import
circle, one home for mlflow and for collectives, nothing of the harness importing the plugins, small files.

Layers, low to high (a module may import its own layer and the ones below):
  0 schema and utilities: validate, languages, seeding, lockfile, faults, config, numerics, interrupts
  1 building blocks: method, registry, data, models, buckets, moo, perf, plots, tracking
  2 engines and jobs: suite, train, preference, distributed, evaluate, analysis, leaderboard
  3 orchestration: executor, runner, reproduce, api (the public own-loop API over moo and distributed), check,
    memory_guard (check's single-process memory refusal, over the planner)
  4 entry points: cli, __main__
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

HARNESS = REPO / "harness"
LAYERS = {
    0: ("validate", "languages", "seeding", "lockfile", "faults", "config", "numerics", "interrupts"),
    1: ("method", "registry", "data", "models", "buckets", "moo", "perf", "plots", "tracking"),
    2: ("suite", "train", "preference", "distributed", "evaluate", "analysis", "leaderboard"),
    3: ("executor", "runner", "reproduce", "api", "check", "memory_guard"),
    4: ("cli", "__main__", "__init__"),
}
# The imports that run back up, each with the reason its importer's docstring gives (at most two).
UPWARD = {
    ("harness.method", "harness.executor"): "the engines import torch and the trainer: only when training",
}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # longer needs "long because" in its docstring or a comment on its first line


def _modules() -> dict[str, Path]:
    out = {}
    for path in HARNESS.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in LAYERS.items():
        if top in names:
            return rank
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of {__file__}; add it")


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported name, line, at module level) of every import, skipping `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for n in ast.walk(stmt)}
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(f"{node.module}.{a.name}", node.lineno, id(node) in top_level) for a in node.names]
    return out


def _harness_edges(module_level_only: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _, top in _imports(path):
            target = _resolve(name) if name.startswith("harness") else None
            if target and target != module and (top or not module_level_only):
                edges[module].add(target)
    return edges


def test_no_import_circle_at_module_level():
    edges, state, stack = _harness_edges(module_level_only=True), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_imports_run_downwards_but_for_the_documented_exceptions():
    upward = {(m, t) for m, targets in _harness_edges(module_level_only=False).items() for t in targets
              if _layer(t) > _layer(m)}
    assert upward == set(UPWARD), f"imports that run back up: {sorted(upward - set(UPWARD))}"
    assert len(UPWARD) <= 2
    for (module, _), reason in UPWARD.items():
        assert reason in MODULES[module].read_text(), f"{module} must say why it imports upwards: {reason!r}"


COLLECTIVE = re.compile(r"\b(?:dist|torch\.distributed)\.(all_reduce|all_gather\w*|reduce_scatter\w*|all_to_all\w*|"
                        r"broadcast\w*|barrier|send|recv|isend|irecv|init_process_group|new_group)\(")


def test_only_tracking_imports_mlflow():
    offenders = [m for m, path in MODULES.items() if m != "harness.tracking"
                 and any(n.split(".")[0] == "mlflow" for n, _, _ in _imports(path))]
    assert not offenders, offenders


def test_only_the_distributed_package_calls_collectives():
    offenders = [f"{m}: {hit.group(0)}" for m, path in MODULES.items() if not m.startswith("harness.distributed")
                 for hit in COLLECTIVE.finditer(path.read_text())]
    assert not offenders, offenders


def test_the_harness_never_imports_the_plugins():
    offenders = [(m, n) for m, path in MODULES.items() for n, _, _ in _imports(path)
                 if n.split(".")[0] in ("baselines", "methods")]
    assert not offenders, offenders


def test_files_and_functions_stay_small():
    too_long = [f"{p.relative_to(REPO)}: {n} lines" for p in MODULES.values()
                if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not too_long, too_long
    long_functions = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                doc = (ast.get_docstring(node) or "") + lines[node.lineno - 1]
                if length > MAX_FUNCTION_LINES and "long because" not in doc:
                    long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_functions, long_functions
