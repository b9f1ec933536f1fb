"""Packaging metadata agrees with itself: one version, true floors, a lock inside the ranges.

* The version is written once, in `consul_leader/__init__.py`; pyproject.toml, the CLI, the
  build_info metric and the Dockerfile's VERSION default all read or match it.
* The revision: `CONSUL_LEADER_REVISION` (the image sets it), else the checkout's commit, else
  "unknown".
* constraints/floor.txt (what `make test-floor` installs) is exactly pyproject's lower bounds.
* requirements.lock and requirements-build.lock pin, with hashes, versions inside
  pyproject's ranges, and nothing the resolver did not account for.
* Test tools are pinned exactly; the LICENSE is the one pyproject names.

The wheel itself is built and installed by tests/integration/test_wheel.py.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import consul_leader
from consul_leader.adapters import cli
from tests.unit.test_deploy_files import read_dockerfile

REPO = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def requirements(texts: list[str]) -> dict[str, Requirement]:
    found = {canonicalize_name(r.name): r for r in map(Requirement, texts)}
    assert len(found) == len(texts), f"a requirement is listed twice: {texts}"
    return found


RUNTIME = requirements(PROJECT["dependencies"])
BUILD = requirements(PYPROJECT["build-system"]["requires"])


def lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{requirement}: one >= lower bound expected"
    return bounds[0]


def read_pins(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """`name==version` lines of a pip requirements file, with their `--hash` options."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))  # join continuations
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"{path.name}: not a hashed pin: {line[:80]}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = (Version(match.group(2)), re.findall(r"[0-9a-f]{64}", match.group(3)))
    return pins


def read_via(path: Path) -> dict[str, set[str]]:
    """pip-compile's `# via` notes: what asked for each pin."""
    via: dict[str, set[str]] = {}
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"([A-Za-z0-9._-]+)==", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            continue
        note = re.match(r"\s+#\s+(?:via\s*)?(.*)$", line)
        if current and note and note.group(1).strip():
            via.setdefault(current, set()).add(note.group(1).strip())
    return via


# --------------------------------------------------------------------------- one version


def test_the_version_is_written_once() -> None:
    assert "version" not in PROJECT, "pyproject.toml must not repeat the version"
    assert PROJECT["dynamic"] == ["version"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "consul_leader.__version__"}
    assert Version(consul_leader.__version__) >= Version("0.1.0")


def test_cli_reports_the_one_version() -> None:
    assert cli.version() == consul_leader.__version__


def test_dockerfile_version_default_is_the_one_version() -> None:
    # The build command passes VERSION from consul_leader.__version__ (scripts/image.py, the
    # README); a plain `docker build .` gets this default, which must not drift.
    arguments = [i.arguments for i in read_dockerfile() if i.keyword == "ARG"]
    assert f"VERSION={consul_leader.__version__}" in arguments


# --------------------------------------------------------------------------- revision


def test_revision_from_the_environment_wins() -> None:
    assert cli.revision({"CONSUL_LEADER_REVISION": " 0123abc\n"}) == "0123abc"


def test_revision_of_a_git_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "consul_leader"
    package.mkdir()
    (package / "__init__.py").write_text("")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=30)
    subprocess.run([*git, "add", "."], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True, timeout=30)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    monkeypatch.setattr(consul_leader, "__file__", str(package / "__init__.py"))

    assert cli.revision({}) == head
    assert cli.revision({"CONSUL_LEADER_REVISION": ""}) == head  # blank counts as unset


def test_revision_is_unknown_outside_a_checkout(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    site_packages = tmp_path / "site-packages" / "consul_leader"
    site_packages.mkdir(parents=True)
    monkeypatch.setattr(consul_leader, "__file__", str(site_packages / "__init__.py"))

    assert cli.revision({}) == "unknown"


# --------------------------------------------------------------------------- floors


def test_every_dependency_has_a_floor_and_a_ceiling() -> None:
    for name, requirement in {**RUNTIME, **BUILD}.items():
        lower_bound(requirement)
        if name in RUNTIME:
            assert any(s.operator == "<" for s in requirement.specifier), f"{requirement}"


def test_floor_constraints_are_exactly_the_lower_bounds() -> None:
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints" / "floor.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            [specifier] = list(requirement.specifier)
            assert specifier.operator == "==", f"floor.txt pins exactly: {line}"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    expected = {name: lower_bound(r) for name, r in {**RUNTIME, **BUILD}.items()}
    assert pins == expected


def test_the_code_imports_no_undeclared_third_party_package() -> None:
    # urllib3 is imported by the adapters directly, so it is declared with its own floor rather
    # than left to whatever requests allows (requests still allows urllib3 1.26).
    imported: set[str] = set()
    for path in [*(REPO / "adapters").rglob("*.py"), *(REPO / "fsm").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported - {"consul_leader", "__future__"}
                   if name not in sys.stdlib_module_names}
    declared = {name.replace("-", "_") for name in RUNTIME}
    assert third_party == declared


# --------------------------------------------------------------------------- lock files


def test_runtime_lock_pins_versions_inside_the_ranges_with_hashes() -> None:
    lock = REPO / "requirements.lock"
    pins = read_pins(lock)
    for name, requirement in RUNTIME.items():
        assert name in pins, f"requirements.lock lacks {name}: run `make lock`"
        version, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement.specifier}: "
            "run `make lock`"
        )
    assert all(hashes for _version, hashes in pins.values()), "every pin has a hash"


def test_runtime_lock_holds_only_what_the_project_needs() -> None:
    lock = REPO / "requirements.lock"
    pins, via = read_pins(lock), read_via(lock)
    assert set(via) == set(pins), "every pin says what asked for it"
    direct = {name for name, reasons in via.items() if "consul-leader (pyproject.toml)" in reasons}
    assert direct == set(RUNTIME), "the lock's direct pins are pyproject's dependencies"
    for name, reasons in via.items():
        askers = {canonicalize_name(r) for r in reasons if r != "consul-leader (pyproject.toml)"}
        assert askers <= set(pins), f"{name} is asked for by {askers - set(pins)}, not locked"


def test_build_lock_pins_a_setuptools_the_build_system_allows() -> None:
    pins = read_pins(REPO / "requirements-build.lock")
    assert set(pins) == set(BUILD)
    for name, (version, hashes) in pins.items():
        assert BUILD[name].specifier.contains(version) and hashes


# --------------------------------------------------------------------------- tools, license


def test_test_tools_are_pinned_exactly() -> None:
    for text in PROJECT["optional-dependencies"]["test"]:
        specifiers = list(Requirement(text).specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {text}"


def test_license_is_mit_for_the_consul_leader_authors() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 consul-leader authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
