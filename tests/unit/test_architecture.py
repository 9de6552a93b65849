"""The folder tree is the architecture: imports point one way (STYLE habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "eventservice"

#: layer -> layers it must never import.
FORBIDDEN = {
    "domain": {"store", "dispatcher", "server", "cli", "pilot", "client", "storage", "payload"},
    "store": {"dispatcher", "server", "cli", "pilot", "client", "storage", "payload"},
    "dispatcher": {"server", "cli", "pilot", "client", "storage"},
    "server": {"cli", "pilot", "client", "storage", "payload"},
    "pilot": {"store", "dispatcher", "server", "cli"},
    "client": {"store", "dispatcher", "server", "cli", "pilot", "storage", "payload"},
    "storage": {"store", "dispatcher", "server", "cli", "pilot", "client", "payload"},
    "payload": {"store", "dispatcher", "server", "cli", "pilot", "client"},
    "demo": {"store", "dispatcher", "server", "pilot", "client"},
}


def imported_layers(path: Path) -> set[str]:
    """Top-level ``eventservice.<layer>`` names a module imports (eagerly or lazily)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "eventservice" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = imported_layers(path) & FORBIDDEN[layer]
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)} imports {sorted(bad)}")
    assert (PACKAGE / layer).is_dir()
    assert not offenders, "\n".join(offenders)


def test_checker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from eventservice.store import schema\n")
    assert imported_layers(module) == {"store"}
