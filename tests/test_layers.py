"""The package's layers point one way: no module imports from a layer above its own, and there is no
import cycle inside ``src/coevol``.

Every ``import`` statement that runs counts, wherever it is written (module level, inside a
function): a function-level import is how a cycle hides. Imports under ``if TYPE_CHECKING:`` never
run and name types only, so they are left out. The layers are declared once,
here, bottom first; a module belongs to the layer of the longest name below that it starts with,
so a new module inside an existing package needs nothing, and a new top-level module or package
must be placed in a layer (the test says which one is missing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import coevol

SRC = Path(coevol.__file__).parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the error tree everyone raises and pure text helpers: import nothing from coevol
    ("base", ("coevol.errors", "coevol.textsafe", "coevol.textdiff")),
    # the records and words every layer shares (the trace, usage, roles, completions)
    ("domain", ("coevol.domain",)),
    # the paper's templates and the pure rendering of a sample into messages
    ("prompts", ("coevol.prompts",)),
    # the agents: build an agent's messages, read its answer; a model is only an injected callable
    ("roles", ("coevol.roles",)),
    # the strategies (Algorithm 1, the tree search) and the pure logic beside them (conversation
    # windows, the judge audit)
    ("loop", ("coevol.loop", "coevol.tree", "coevol.conversation", "coevol.audit")),
    # the edges: data files, model clients, the call store, installed extras (they may use one
    # another's guards)
    ("adapters", ("coevol.io", "coevol.llm", "coevol.store", "coevol.extras")),
    # what a run is made of: the configuration, one example refined, the dry-run plan
    ("run", ("coevol.config", "coevol.multiturn", "coevol.plan")),
    # the engine: scheduling calls to servers, building routes, running a file
    ("engine", ("coevol.engine",)),
    # the rooms built on the engine or the trace: comparing datasets, reporting a run
    ("rooms", ("coevol.compare", "coevol.report", "coevol.judge_check")),
    # the Python API and the package's public face (``coevol/__init__.py``, matched by itself only)
    ("api", ("coevol.api", "coevol")),
    # executors past one process: a Ray shard runs the file API
    ("executors", ("coevol.executors",)),
    # the command line (and ``python -m coevol``), and the fakes for tests (nothing in the package
    # may import them)
    ("tools", ("coevol.cli", "coevol.__main__", "coevol.testing")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The coevol modules ``name`` imports (``from pkg import mod`` names the module itself)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _running(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _running(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if _type_checking(node):
            assert isinstance(node, ast.If)
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = "." in prefix and module.startswith(prefix + ".")  # the root names itself only
            if (module == prefix or below) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = _graph()
    assert "coevol.api" in graph["coevol.executors"]  # imported inside a function only
    assert "coevol.errors" in graph["coevol.executors.on_ray"]  # ``from coevol import errors``
    assert "coevol.testing.server" not in graph["coevol.testing.batches"]  # under TYPE_CHECKING only
    assert len(graph) > 50


def test_every_module_has_a_layer() -> None:
    assert [m for m in sorted(_graph()) if _layer(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{m} ({LAYERS[_layer(m) or 0][0]}) imports {t} ({LAYERS[_layer(t) or 0][0]})"
        for m, targets in sorted(_graph().items())
        for t in sorted(targets)
        if (_layer(t) or 0) > (_layer(m) or 0)
    ]
    assert upward == []


def test_there_is_no_import_cycle_in_the_package() -> None:
    assert _cycle(_graph()) is None


def test_the_checks_can_fail() -> None:
    """The cycle finder finds a planted cycle, and an upward import is seen as one."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert (_layer("coevol.domain") or 0) < (_layer("coevol.llm.types") or 0)
    assert _layer("coevol.cli.anything_new") == len(LAYERS) - 1
    assert _layer("coevol.anything_new") is None
