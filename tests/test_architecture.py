"""The sans-I/O rule of docs/ARCHITECTURE.md, checked on the source with ``ast``.

Protocol cores take bytes and ``now`` and return bytes, events and deadlines. Only the asyncio
adapters (modules named ``aio.py`` or ``aio_*.py``), the CLI, the lab, the fleet runner and the
test-server helpers may touch sockets, clocks, threads, processes or asyncio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "phone_sim"
IO_MODULES = {"asyncio", "socket", "selectors", "ssl", "time", "threading", "subprocess", "uvloop"}
IO_PACKAGES = {"cli", "lab", "fleet"}


def _is_adapter(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    return (
        path.name == "aio.py"
        or path.name.startswith("aio_")
        or (len(rel.parts) > 1 and rel.parts[0] in IO_PACKAGES)
    )


def _core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _is_adapter(p))


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    forbidden = _imported_roots(tree) & IO_MODULES
    assert not forbidden, f"{path.name} is a protocol core but imports {sorted(forbidden)}"


def test_the_rule_can_fail() -> None:
    tree = ast.parse("import asyncio\nfrom socket import socket\n")
    assert _imported_roots(tree) & IO_MODULES == {"asyncio", "socket"}
