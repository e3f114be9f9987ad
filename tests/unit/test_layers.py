"""The package layers: no module imports a package above its own, and no backend imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import onshore

ROOT = Path(onshore.__file__).parent

# Bottom to top; a module may import its own layer and those below it.
LAYERS: list[set[str]] = [
    {"errors", "ids", "models", "config", "archives", "background", "events", "__init__"},
    {"images"},
    {"runtimes"},  # the runtime interface and what backends share (onshore/runtimes/*.py)
    {"runtimes.process", "runtimes.docker", "store"},  # the backends: siblings that never import each other
    {"scheduling"},  # resources and placement, over what the runtimes say nodes have
    {"services"},
    {"loops"},
    {"protocol"},
    {"api", "http"},
    {"server"},
    {"cli", "__main__"},
]
BACKENDS = {"runtimes.process", "runtimes.docker"}


def _part(module: str) -> str:
    """The layer part of a dotted module name below onshore."""
    parts = module.split(".")
    if parts[0] == "runtimes" and len(parts) > 2 and parts[1] in ("process", "docker"):
        return f"runtimes.{parts[1]}"
    if parts[0] == "runtimes" and len(parts) == 2 and parts[1] in ("process", "docker"):
        return f"runtimes.{parts[1]}"  # the backend's package itself
    return parts[0]


def _layer(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"onshore.{part} is in no layer: add it to LAYERS")


def _runtime_imports(tree: ast.Module) -> list[str]:
    """The onshore modules a file imports when it runs (imports only for type checkers left out)."""
    found: list[str] = []

    def visit(nodes: list[ast.AST]) -> None:
        for child in nodes:
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(list(child.orelse))
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("onshore"):
                base = child.module.removeprefix("onshore").lstrip(".")
                found.extend(f"{base}.{alias.name}" if base else alias.name for alias in child.names)
            elif isinstance(child, ast.Import):
                names = [alias.name for alias in child.names if alias.name.startswith("onshore.")]
                found.extend(name.removeprefix("onshore.") for name in names)
            visit(list(ast.iter_child_nodes(child)))

    visit(list(tree.body))
    return found


def _module_part(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return _part(".".join(parts))


def test_no_module_imports_a_layer_above_its_own_and_no_backend_another() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        mine = _module_part(path)
        for target in _runtime_imports(ast.parse(path.read_text())):
            theirs = _part(target)
            if theirs == mine:
                continue
            if mine in BACKENDS and theirs in BACKENDS:
                wrong.append(f"{path.relative_to(ROOT)} (backend {mine}) imports backend {theirs}")
            elif _layer(theirs) > _layer(mine):
                wrong.append(f"{path.relative_to(ROOT)} ({mine}) imports onshore.{target}, a layer above")
    assert wrong == []


def test_the_layer_check_sees_an_upward_import() -> None:
    tree = ast.parse("from onshore.services.calls import CallService\nfrom onshore.runtimes import docker\n")
    assert [_part(t) for t in _runtime_imports(tree)] == ["services", "runtimes.docker"]
    assert _layer("services") > _layer("runtimes.process")
