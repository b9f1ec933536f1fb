"""py-consul's own session, KV and status tests, unchanged, against the stand-in.

Acceptance (issue 10): "py-consul's session, KV and status API tests (their own test
files, unchanged) pass against the stand-in". Their sdist on PyPI carries its tests; this
module downloads it with pip (pinned, cached under .cache/, which git ignores), extracts it,
and runs those three files in a separate pytest process whose `consul_port` fixture is a
fresh stand-in instead of their Docker container (py_consul_suite/consul_double_fixtures.py).
Third-party code is never committed. The test skips only when PyPI cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conformance.conftest import REAL_CONSUL_ADDR

PY_CONSUL_VERSION = "1.8.0"  # pinned: the counts below are those of this release
SUITE_FILES = ("tests/api/test_session.py", "tests/api/test_kv.py", "tests/api/test_status.py")
EXPECTED_TESTS = 14  # 2 session + 10 KV + 2 status tests in 1.8.0
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "py-consul"
PLUGIN_DIR = Path(__file__).resolve().parent / "py_consul_suite"
# What pip prints when it cannot reach the index at all (urllib3 / requests wording).
_UNREACHABLE_MARKERS = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name",
    "Name or service not known", "ConnectTimeoutError", "Connection refused", "ProxyError",
    "Network is unreachable", "Read timed out", "No route to host",
)


def test_py_consul_session_kv_and_status_tests_pass(tmp_path: Path) -> None:
    if REAL_CONSUL_ADDR:
        pytest.skip("runs against the Consul double only (CONSUL_TEST_HTTP_ADDR is set)")
    tree = _sdist_tree()
    junit = tmp_path / "py-consul.xml"
    result = _run_their_tests(tree, junit, tmp_path)
    assert junit.is_file(), result.stdout + result.stderr
    totals = _junit_totals(junit)
    assert totals == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}, (
        f"{totals}\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    )
    assert result.returncode == 0, result.stdout[-6000:]


def _sdist_tree() -> Path:
    """The extracted sdist, downloaded once into the cache."""
    tree = CACHE_DIR / f"py_consul-{PY_CONSUL_VERSION}"
    if all((tree / name).is_file() for name in SUITE_FILES):
        return tree
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as download_dir:
        archive = _download_sdist(Path(download_dir))
        _extract(archive, CACHE_DIR)
    return tree


def _extract(archive: Path, destination: Path) -> None:
    """Extract refusing links and paths that leave `destination` (tarfile's "data" filter
    where this Python has it, the same checks by hand where it does not)."""
    with tarfile.open(archive) as sdist:
        if hasattr(tarfile, "data_filter"):
            sdist.extractall(destination, filter="data")
            return
        root = destination.resolve()
        for member in sdist.getmembers():
            target = (destination / member.name).resolve()
            if member.issym() or member.islnk() or not target.is_relative_to(root):
                raise RuntimeError(f"unsafe member {member.name!r} in {archive.name}")
        sdist.extractall(destination)  # members checked above


def _download_sdist(directory: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", f"py-consul=={PY_CONSUL_VERSION}", "--dest", str(directory),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if any(marker in output for marker in _UNREACHABLE_MARKERS):
            pytest.skip(f"PyPI cannot be reached to fetch py-consul {PY_CONSUL_VERSION}: "
                        f"{output.strip().splitlines()[-1]}")
        pytest.fail(f"pip download of py-consul {PY_CONSUL_VERSION} failed:\n{output}")
    [archive] = directory.glob("py_consul-*.tar.gz")
    return archive


def _run_their_tests(tree: Path, junit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Their files, their tests/conftest.py; our ini (theirs wants pytest-cov) and plugin."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    python_path = [str(PLUGIN_DIR), str(REPO_ROOT / "tests")]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    environment.pop("CONSUL_HTTP_ADDR", None)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "consul_double_fixtures",
        "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(tree),
        f"--confcutdir={tree / 'tests'}", f"--junitxml={junit}",
        *(str(tree / name) for name in SUITE_FILES),
    ]
    return subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True,
                          timeout=600, check=False)


def _junit_totals(junit: Path) -> dict[str, int]:
    root = ElementTree.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, "no testsuite in the JUnit report"
    return {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
