"""nrtrec's rule on imports, checked on every import statement of every module (those inside
functions too). The rule, as the README's "Where things live" states it:

1. Layers. A package imports only packages of the layers below its own:

       cli                                   the façade: may import anything
       deploy, rollout                       the local runner; the model lifecycle
       inference, query_node, streaming,     the services
       recommender_app
       ann, user_store                       libraries: ANN indexes, the user-vector store
       core                                  settings, logs, web and Kafka helpers, data sets
       schemas                               the contract: imports nothing of nrtrec's

2. Services meet only at contracts: a service imports another service only through that
   service's typed client (``SERVICE_CLIENTS``), never its internals.

3. No module imports itself back, however indirectly (no cycle). Imports guarded by
   ``if TYPE_CHECKING:`` are for the type checker only and do not count as cycles.

``import-linter`` would state these as contracts, but its graph builder (grimp) needs each
package to be a top-level one, and ours are ``nrtrec.X`` sub-packages mapped onto top-level
folders (``tool.setuptools.package-dir``); so the rule is checked here, in a hundred lines.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[set[str]] = [
    {"schemas"},
    {"core"},
    {"ann", "user_store"},
    {"inference", "query_node", "streaming", "recommender_app"},
    {"deploy", "rollout"},
    {"cli"},
]
SERVICES = LAYERS[3]
# What a service may import of another: its typed client, and what the client raises.
SERVICE_CLIENTS: dict[str, tuple[str, ...]] = {
    "query_node": ("nrtrec.query_node.client",),
    "inference": ("nrtrec.inference.client",),
}


@dataclass(frozen=True)
class Edge:
    source: str  # module
    target: str  # module (or package) it imports
    line: int
    type_only: bool

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def modules() -> dict[str, Path]:
    """Every nrtrec module, by name, from the package-dir map in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found: dict[str, Path] = {}
    for package, folder in config["package-dir"].items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "nrtrec" and parts:
                continue  # the root package holds only its __init__
            if all(p.isidentifier() for p in parts):
                found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: Iterable[str]) -> list[Edge]:
    """The nrtrec modules ``name`` imports; ``from a import b`` names ``a.b`` when that is a
    module, else ``a``."""
    known = set(known)
    tree = ast.parse(path.read_text(), str(path))
    type_only_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                type_only_lines.update(range(inner.lineno, (inner.end_lineno or 0) + 1))
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                targets.append(full if full in known else node.module)
        for target in dict.fromkeys(targets):
            if target == "nrtrec" or target.startswith("nrtrec."):
                edges.append(Edge(name, target, node.lineno, node.lineno in type_only_lines))
    return edges


def package_of(module: str) -> str:
    """``nrtrec.query_node.deltas.consumer`` -> ``query_node``; the root package -> ``nrtrec``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "nrtrec"


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def forbidden(edges: Iterable[Edge]) -> list[str]:
    """Each edge that breaks rule 1 or 2, with the rule it breaks."""
    problems = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source == target or "nrtrec" in (source, target):
            continue
        if source in SERVICES and target in SERVICES:
            allowed = SERVICE_CLIENTS.get(target, ())
            if not any(edge.target == c or edge.target.startswith(c + ".") for c in allowed):
                clients = ", ".join(allowed) or "none"
                problems.append(
                    f"{edge}: a service reaches {target} only through its client ({clients})"
                )
        elif layer_of(target) >= layer_of(source) and source != "cli":
            problems.append(f"{edge}: {source} may not import {target} (a layer at or above it)")
    return problems


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The strongly connected groups of modules (Tarjan), each a cycle of imports."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if not edge.type_only:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def all_edges(found: Mapping[str, Path]) -> list[Edge]:
    return [edge for name, path in found.items() for edge in imports(name, path, found)]


# ---- the rule on nrtrec itself ------------------------------------------------------------------


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in modules()} - {"nrtrec"}
    assert packages <= set().union(*LAYERS), packages - set().union(*LAYERS)


def test_no_import_breaks_the_layers_or_reaches_into_another_service():
    problems = forbidden(all_edges(modules()))
    assert problems == [], "\n".join(problems)


def test_no_import_cycle():
    found = cycles(all_edges(modules()))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# ---- the checks themselves, on made-up imports ---------------------------------------------------


def test_the_checks_catch_what_they_are_for():
    edges = [
        Edge("nrtrec.schemas.codec", "nrtrec.core.settings", 1, False),  # up a layer
        Edge("nrtrec.recommender_app.service", "nrtrec.query_node.node", 2, False),  # internals
        Edge("nrtrec.recommender_app.service", "nrtrec.query_node.client", 3, False),  # fine
        Edge("nrtrec.core.a", "nrtrec.core.b", 4, False),
        Edge("nrtrec.core.b", "nrtrec.core.a", 5, False),
        Edge("nrtrec.core.c", "nrtrec.core.a", 6, True),  # type-only: no cycle
        Edge("nrtrec.core.a", "nrtrec.core.c", 7, False),
    ]
    problems = forbidden(edges)
    assert len(problems) == 2
    assert "schemas may not import core" in problems[0]
    assert "only through its client" in problems[1]
    assert cycles(edges) == [["nrtrec.core.a", "nrtrec.core.b"]]
