"""The sans-I/O rule of docs/ARCHITECTURE.md, checked on the source with ``ast``.

Protocol cores take bytes and ``now`` and return bytes, events and deadlines. Only the asyncio
adapters (modules named ``aio.py`` or ``aio_*.py``, wherever they live: the phone's shell, the
lab's listeners, the fleet runner, test helpers) and the CLI may touch sockets, clocks,
threads, processes, asyncio, mDNS or Ray.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "phone_sim"
IO_MODULES = {"asyncio", "socket", "selectors", "ssl", "time", "threading", "subprocess",
              "multiprocessing", "uvloop", "zeroconf", "ray"}
IO_PACKAGES = {"cli"}


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


def test_the_lab_cores_are_checked_too() -> None:
    checked = {str(p.relative_to(PACKAGE)) for p in _core_modules()}
    assert {"lab/registrar.py", "lab/proxy.py", "phone/core.py", "call/router.py"} <= checked
    assert "phone/aio.py" not in checked and "cli/register.py" not in checked


def test_the_rule_can_fail() -> None:
    tree = ast.parse("import asyncio\nfrom socket import socket\n")
    assert _imported_roots(tree) & IO_MODULES == {"asyncio", "socket"}


def _imports_of(path: Path) -> set[str]:
    # phone_sim modules imported at run time, lazily inside functions too; imports under
    # ``if TYPE_CHECKING:`` are for annotations only and are left out.
    deps: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    guarded = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        deps.update(n for n in names if n.startswith("phone_sim."))
    return deps


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles() -> None:
    graph = {_module_name(p): _imports_of(p) for p in PACKAGE.rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module):], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
