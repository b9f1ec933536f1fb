"""fsm/ decides; it must not reach the outside world, a clock, threads or processes."""

import ast
from pathlib import Path

import pytest

FSM_DIR = Path(__file__).resolve().parents[2] / "fsm"
FORBIDDEN = {"requests", "prometheus_client", "threading", "socket", "subprocess", "os", "time"}
FSM_MODULES = sorted(FSM_DIR.glob("*.py"))


def imported_roots(source: str) -> set[str]:
    """Top-level package of every import statement, wherever it appears in the module."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_scan_sees_the_modules_and_catches_hidden_imports() -> None:
    assert {p.name for p in FSM_MODULES} >= {"machine.py", "table.py", "timing.py"}
    hidden = "def f():\n    import os.path\n    from time import monotonic\n"
    assert imported_roots(hidden) == {"os", "time"}


@pytest.mark.parametrize("module", FSM_MODULES, ids=lambda p: p.name)
def test_fsm_module_imports_nothing_impure(module: Path) -> None:
    assert imported_roots(module.read_text()) & FORBIDDEN == set()
