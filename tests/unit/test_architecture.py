"""The package layering of docs/architecture.md, held by the import graph (issue 15).

Every ``import`` of ``tradebridge`` code inside ``src/tradebridge`` is read with ``ast``
(imports under ``TYPE_CHECKING`` and inside functions count: a cycle hidden in a function is
still a cycle). Three rules:

1. each package imports only the packages its row of ``ALLOWED`` names (dependencies point
   down: cli → runtime → {intake, dispatch, tracking, doctor} → {pipeline, brokers, store}
   → domain; the ground floor, ``errors``, ``obs``, ``_aio``, ``_net``, ``_heap``, is open to all);
2. there is no cycle between packages (implied by 1 as long as ``ALLOWED`` has none, which
   is checked too);
3. a private module (``_name``) is imported only from inside the package that holds it
   (``tradebridge._aio`` by any of tradebridge, ``brokers._lookup`` only by ``brokers``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "tradebridge"

GROUND = frozenset({"errors", "obs", "_aio", "_net", "_heap"})
_SERVICES = frozenset({"domain", "config", "pipeline", "brokers", "store"})
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "_aio": frozenset(),
    "_net": frozenset(),
    "_heap": frozenset(),
    "obs": frozenset({"errors"}),
    "domain": frozenset({"errors"}),
    "config": frozenset({"domain", "errors"}),
    "sim": GROUND | {"domain"},
    "pipeline": GROUND | {"domain", "config"},
    "store": GROUND | {"domain", "config"},
    "brokers": GROUND | {"domain", "config", "store"},
    "intake": GROUND | {"domain", "config", "pipeline", "brokers", "store"},
    "tracking": GROUND | {"domain", "config", "pipeline", "brokers", "store"},
    "dispatch": GROUND | {"domain", "config", "pipeline", "brokers", "store", "tracking"},
    "doctor": GROUND | {"domain", "config", "brokers", "store"},
    "runtime": GROUND | _SERVICES | {"sim", "intake", "tracking", "dispatch", "doctor"},
    "cli": GROUND
    | _SERVICES
    | {"sim", "intake", "tracking", "dispatch", "doctor", "runtime"}
    | {"<root>"},
    "__main__": frozenset({"cli"}),
    "<root>": frozenset(),  # tradebridge/__init__.py: the version only
}


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _imports() -> Iterator[tuple[str, str]]:
    """Yield (importing module, imported tradebridge module) for every import in src."""
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("tradebridge"):
                    base = node.module
                    yield module, base
                    # ``from tradebridge.x import y`` may import the module x.y
                    for alias in node.names:
                        if (ROOT.parent / Path(*base.split("."), alias.name)).exists() or (
                            ROOT.parent / Path(*base.split("."), f"{alias.name}.py")
                        ).exists():
                            yield module, f"{base}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tradebridge"):
                        yield module, alias.name


def _private_owner(module: str) -> str | None:
    """Return the package a private module belongs to (``a.b._c`` -> ``a.b``), or None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and part != "__main__":
            return ".".join(parts[:i])
    return None


def _package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for source, target in _imports():
        a, b = _package_of(source), _package_of(target)
        if a != b:
            edges.setdefault(a, set()).add(b)
    return edges


def _cycle(graph: dict[str, set[str]] | dict[str, frozenset[str]]) -> list[str] | None:
    """Return one cycle of ``graph`` (a list of nodes), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_every_package_is_in_the_layering() -> None:
    packages = {_package_of(_module_of(p)) for p in ROOT.rglob("*.py")}

    assert packages <= set(ALLOWED), sorted(packages - set(ALLOWED))


def test_the_layering_itself_has_no_cycle() -> None:
    assert _cycle(ALLOWED) is None


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = {
        package: sorted(targets - ALLOWED.get(package, frozenset()))
        for package, targets in _package_edges().items()
        if targets - ALLOWED.get(package, frozenset())
    }

    assert wrong == {}


def test_no_cycle_between_packages() -> None:
    assert _cycle(_package_edges()) is None


def test_private_modules_are_imported_only_within_their_package() -> None:
    leaks = sorted(
        f"{source} imports {target}"
        for source, target in _imports()
        if (owner := _private_owner(target)) is not None and not source.startswith(f"{owner}.")
    )

    assert leaks == []


def test_the_checks_see_a_cycle_and_a_leak_when_there_is_one() -> None:
    # The rules above must be able to fail: a planted cycle and a planted leak are found.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    edges = _package_edges()
    assert "store" in edges["brokers"]  # the graph is read at all
    assert _cycle({**edges, "store": {*edges.get("store", ()), "brokers"}}) is not None
