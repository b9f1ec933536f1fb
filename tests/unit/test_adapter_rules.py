"""The architecture rules of adapters/, read from the source with `ast`.

1. Adapters never depend on each other: an adapter module imports, from adapters/, only the
   Consul port (and its errors), the controller's `Post`, its own configuration and the
   shared worker thread, plus the pure helpers of its own package. The effects hub drives
   adapters through protocols of its own; only the composition root (`sidecar`, and `cli`
   which starts it) knows every adapter.
2. No literal timeouts in the adapters that talk to Consul or run the machine: every timeout,
   wait and pause derives from the TTL, the renew interval or the watch wait
   (`fsm.timing.Timings`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
PACKAGE = "consul_leader.adapters."

# Anyone may import these.
SHARED = {"consul.port", "consul.errors", "controller", "config", "durations", "threads",
          "peers"}
# Pure helpers, importable within their own package.
HELPERS = {"election.key": "election", "publishing.labels": "publishing"}
# What else a module may import, beyond SHARED and its package's HELPERS.
EXTRA: dict[str, set[str]] = {
    "consul.http": {"consul.transport"},  # the port, over the transport
    "effects": {"publishing.labels"},  # the role the hub asks the publisher to publish
}
ROOTS = {"sidecar", "cli"}  # the composition root may import every adapter

# Where timeouts must come from `Timings`, never from literals.
TIMED = ["consul/http.py", "election", "publishing", "controller.py", "effects.py",
         "sidecar.py", "threads.py"]
TIME_NAME = re.compile(r"TIMEOUT|WAIT|INTERVAL|DELAY|PAUSE|PERIOD|BUDGET|BACKOFF|GRACE|AFTER",
                       re.IGNORECASE)
TIME_CALLS = {"wait", "join", "sleep", "Timer"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ADAPTERS).with_suffix("").parts)


def modules() -> list[Path]:
    return sorted(p for p in ADAPTERS.rglob("*.py") if p.name != "__init__.py")


def adapter_imports(source: str) -> set[str]:
    """The adapters/ modules a source imports (relative to consul_leader.adapters)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PACKAGE):
                found.add(node.module.removeprefix(PACKAGE))
            elif node.module == PACKAGE.rstrip("."):
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix(PACKAGE) for alias in node.names
                         if alias.name.startswith(PACKAGE))
    return found


def allowed(name: str) -> set[str]:
    package = name.split(".")[0] if "." in name else None
    own_helpers = {helper for helper, home in HELPERS.items() if home == package}
    return SHARED | own_helpers | EXTRA.get(name, set())


def test_the_scan_sees_every_package_and_catches_a_forbidden_import() -> None:
    names = {module_name(p) for p in modules()}
    assert {"election.session", "election.watcher", "election.acquirer", "publishing.publisher",
            "publishing.checks", "consul.port", "effects", "controller"} <= names
    source = "from consul_leader.adapters.election.session import SessionKeeper\n" \
             "def f():\n    from consul_leader.adapters import hooks\n"
    assert adapter_imports(source) == {"election.session", "hooks"}
    assert adapter_imports(source) - allowed("publishing.publisher") == {"election.session",
                                                                         "hooks"}


@pytest.mark.parametrize("path", [p for p in modules() if module_name(p) not in ROOTS],
                         ids=module_name)
def test_an_adapter_depends_only_on_the_port_post_and_its_own_settings(path: Path) -> None:
    name = module_name(path)
    forbidden = adapter_imports(path.read_text()) - allowed(name) - {name}
    assert forbidden == set(), f"{name} imports other adapters: {sorted(forbidden)}"


# -- literal timeouts ---------------------------------------------------------------------------


def timed_modules() -> list[Path]:
    found: list[Path] = []
    for entry in TIMED:
        path = ADAPTERS / entry
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
        and not isinstance(node.value, bool) and node.value != 0


def literal_timeouts(source: str) -> list[str]:
    """Numeric literals given as a timeout, a wait or a pause, or named like one."""
    problems: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            timed_args = [kw.value for kw in node.keywords
                          if kw.arg and TIME_NAME.search(kw.arg)]
            if callee in TIME_CALLS:
                timed_args += node.args
            problems += [f"line {node.lineno}: {callee}(... {ast.unparse(arg)} ...)"
                         for arg in timed_args
                         if any(is_number(n) for n in ast.walk(arg))]
    for statement in [*tree.body, *(s for c in tree.body if isinstance(c, ast.ClassDef)
                                     for s in c.body)]:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        value = getattr(statement, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and TIME_NAME.search(target.id) \
                    and value is not None and is_number(value):
                problems.append(f"line {statement.lineno}: {target.id} = {ast.unparse(value)}")
    return problems


def test_the_literal_scan_catches_timeouts_waits_and_constants() -> None:
    source = ("RETRY_PAUSE = 1.0\nclass A:\n    WATCH_WAIT = 300\n"
              "def f(c, e):\n    c.call(timeout=5.0)\n    e.wait(0.05)\n"
              "    c.call(timeout=max(0.2, x))\n    e.wait(t.retry_cap)\n    c.call(timeout=0)\n")
    assert len(literal_timeouts(source)) == 5


@pytest.mark.parametrize("path", timed_modules(), ids=lambda p: str(p.relative_to(ADAPTERS)))
def test_no_literal_timeouts(path: Path) -> None:
    assert literal_timeouts(path.read_text()) == []
