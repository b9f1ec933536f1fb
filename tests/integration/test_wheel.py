"""The wheel: built from the checkout, it holds one import namespace and runs on its own.

`pip wheel --no-deps` builds it as a user would (build isolation, the newest setuptools
pyproject allows; `make test-floor` builds it with the oldest). Its file list is only
`consul_leader/...` and its dist-info: no top-level `fsm` or `adapters`, no test helpers, every
module of the source folders. Then, as the image does, a fresh virtualenv gets the runtime
dependencies from requirements.lock with `--require-hashes` (so the lock is complete) and the
wheel without dependencies, and `pip check` agrees; from outside the checkout,
`python -m consul_leader --version` and the console script work and import the installed copy.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import consul_leader

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DIST_INFO = f"consul_leader-{consul_leader.__version__}.dist-info"
PIP_TIMEOUT_S = 300  # a cold pip cache may have to fetch setuptools and the locked wheels


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = PIP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(command[:4])} ... exited {result.returncode}: "
        f"{(result.stderr or result.stdout).strip()[-2000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(REPO)], cwd=out)
    [built] = out.glob("*.whl")
    assert built.name == f"consul_leader-{consul_leader.__version__}-py3-none-any.whl"
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", str(root)], cwd=root.parent, timeout=120)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, "--require-hashes", "-r", str(REPO / "requirements.lock")], cwd=root.parent)
    run([*pip, "--no-deps", "--no-index", str(wheel)], cwd=root.parent)
    yield root


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_only_the_consul_leader_namespace(wheel: Path) -> None:
    outside = [n for n in names(wheel)
               if not n.startswith(("consul_leader/", f"{DIST_INFO}/"))]
    assert outside == []
    with zipfile.ZipFile(wheel) as archive:
        top_level = archive.read(f"{DIST_INFO}/top_level.txt").decode().split()
    assert top_level == ["consul_leader"]


def test_wheel_holds_every_module_and_no_test_helper(wheel: Path) -> None:
    files = set(names(wheel))
    expected = {"consul_leader/__init__.py", "consul_leader/__main__.py"}
    for folder in ("fsm", "adapters"):
        expected |= {f"consul_leader/{folder}/{p.relative_to(REPO / folder).as_posix()}"
                     for p in (REPO / folder).rglob("*.py")}
    python_files = {n for n in files if not n.startswith(DIST_INFO)}
    assert python_files == expected
    assert not [n for n in files if "test" in n.rsplit("/", 1)[-1]], "no test helpers"


def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(
            archive.read(f"{DIST_INFO}/METADATA").decode())
        assert f"{DIST_INFO}/licenses/LICENSE" in archive.namelist()
    assert metadata["Name"] == "consul-leader"
    assert metadata["Version"] == consul_leader.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    requires = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert {Requirement(r) for r in requires} == {Requirement(r) for r in _pyproject_dependencies()}


def _pyproject_dependencies() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    return dependencies


def test_locked_dependencies_satisfy_the_wheel(venv: Path) -> None:
    run([str(venv / "bin" / "python"), "-m", "pip", "check"], cwd=venv)


def test_installed_wheel_runs_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CONSUL_LEADER_REVISION")}
    python = str(venv / "bin" / "python")

    version = run([python, "-m", "consul_leader", "--version"], cwd=tmp_path, env=env)
    # An installed wheel records no revision (the image passes its own, see tests/image).
    assert version.stdout == f"consul-leader {consul_leader.__version__} (revision unknown)\n"

    usage = run([str(venv / "bin" / "consul-leader"), "--help"], cwd=tmp_path, env=env)
    assert usage.stdout.startswith("usage: consul-leader")

    where = run([python, "-c", "import consul_leader.adapters.sidecar as s; print(s.__file__)"],
                cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv)
