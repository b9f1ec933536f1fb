"""The real image: the Dockerfile built with podman and run against the Consul stand-in.

Selected by the `image` marker and run by its own CI step (`make test-image`), since it needs
root, Debian's podman, mmdebstrap and runc (`.ci/run` installs them) and about a minute and a
half: the base is bootstrapped from Debian's packages (no registry is reachable), the
Dockerfile is built on it with the versions in requirements.lock, and the container runs with
`--network=host` against a stand-in on loopback. See scripts/image.py for the settings.

What must hold: the labels carry the one version and the revision it was built from; the
container elects (its /status says Leader, and the stand-in's lock key holds its session);
its HEALTHCHECK passes, and fails when nothing answers; it runs as uid 10001; `podman stop`
makes it release the lock, destroy its session and exit 0 within the kill timeout.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

import consul_leader
from scripts.image import Podman, build_image
from tests.harness import REPO, free_port, wait_for

pytestmark = pytest.mark.image

KILL_TIMEOUT_S = 10  # podman stop -t: SIGTERM, then SIGKILL after this many seconds
LOCK_KEY = "consul-leader/lock"  # the default key: CONSUL_LEADER_SERVICE_NAME is not set
NOISE = "unable to get systemd connection"  # podman's healthcheck timers; harmless here


@dataclass(frozen=True)
class Image:
    podman: Podman
    tag: str
    revision: str


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    podman = Podman.isolated(Path(tempfile.mkdtemp(prefix="consul-leader-image-")))
    try:
        tag, revision = build_image(podman, report=lambda line: print(line, flush=True))
        yield Image(podman, tag, revision)
    finally:
        podman.clean()


@pytest.fixture
def agent() -> Iterator[str]:
    """The stand-in as a command, one node on loopback; its HTTP address."""
    port, control = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.consul_double", "--nodes", "n1", "--port", str(port),
         "--control-port", str(control), "--session-ttl-min", "1s"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        ready = _first_line(process.stdout, timeout=20)
        yield str(json.loads(ready)["nodes"]["n1"])
    finally:
        process.terminate()
        process.wait(10)


def _first_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"the stand-in printed nothing within {timeout:.0f} s")
    return str(stream.readline())


def _run(image: Image, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` for commands that end by themselves."""
    return image.podman("run", "--rm", "--network=host", "--no-healthcheck", *arguments,
                        check=False, timeout=timeout)


def _stderr(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if NOISE not in line]


# --------------------------------------------------------------------------- tests


def test_labels_carry_the_one_version_and_the_build_revision(image: Image) -> None:
    [inspected] = json.loads(image.podman("image", "inspect", image.tag).stdout)
    labels = inspected["Config"]["Labels"]

    assert labels["org.opencontainers.image.version"] == consul_leader.__version__
    assert labels["org.opencontainers.image.revision"] == image.revision
    assert inspected["Config"]["User"] == "10001:10001"
    healthcheck = inspected.get("Healthcheck") or {}
    assert healthcheck.get("Test", [""])[0] == "CMD", f"no HEALTHCHECK: {sorted(inspected)}"


def test_version_names_the_version_and_revision(image: Image) -> None:
    result = _run(image, image.tag, "--version")

    assert (result.returncode, _stderr(result)) == (0, [])
    expected = f"consul-leader {consul_leader.__version__} (revision {image.revision})"
    assert result.stdout.strip() == expected


def test_bad_configuration_is_one_line_and_status_2(image: Image) -> None:
    result = _run(image, "--env", "CONSUL_LEADER_TTL=soon", image.tag)

    assert result.returncode == 2
    [line] = _stderr(result)
    assert line.startswith("consul-leader: configuration error: ") and "CONSUL_LEADER_TTL" in line


def test_healthcheck_fails_when_nothing_answers(image: Image) -> None:
    # The image's HEALTHCHECK in a container whose sidecar never started: it must fail,
    # or the passing check in the election test below would prove nothing.
    name = f"consul-leader-idle-{uuid.uuid4().hex[:8]}"
    image.podman("run", "--detach", "--name", name, "--network=host",
                 "--env", f"CONSUL_LEADER_LISTEN=127.0.0.1:{free_port()}",
                 "--entrypoint", "python", image.tag, "-c", "import time; time.sleep(120)")
    try:
        check = image.podman("healthcheck", "run", name, check=False, timeout=30)
        assert check.returncode != 0, check.stdout
        assert "unhealthy" in check.stdout
    finally:
        image.podman("rm", "--force", "--time", "0", name, check=False)


def test_elects_passes_its_healthcheck_runs_as_10001_and_stops_cleanly(
    image: Image, agent: str
) -> None:
    name = f"consul-leader-{uuid.uuid4().hex[:8]}"
    listen = f"127.0.0.1:{free_port()}"
    image.podman("run", "--detach", "--name", name, "--network=host",
                 "--env", f"CONSUL_HTTP_ADDR={agent}", "--env", f"CONSUL_LEADER_LISTEN={listen}",
                 "--env", "CONSUL_LEADER_TTL=3s", "--env", "CONSUL_LEADER_SLEEP=1",
                 "--env", "CONSUL_LEADER_LOG_LEVEL=info", image.tag)
    try:
        status = wait_for(lambda: _leader_status(listen), timeout=30, what="/status: Leader")
        session = status["session"]
        assert _lock_holder(agent) == session

        metrics = requests.get(f"http://{listen}/metrics", timeout=5).text
        assert (f'revision="{image.revision}"' in metrics
                and f'version="{consul_leader.__version__}"' in metrics), "build_info"

        check = image.podman("healthcheck", "run", name, check=False, timeout=30)
        assert check.returncode == 0, f"healthcheck: {check.stdout.strip()}"

        top = image.podman("top", name, "huser").stdout.split()
        assert top[0] == "HUSER" and top[1:] and set(top[1:]) == {"10001"}, top

        started = time.monotonic()
        image.podman("stop", "--time", str(KILL_TIMEOUT_S), name, timeout=KILL_TIMEOUT_S + 30)
        took = time.monotonic() - started
        exit_code = image.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout
        assert exit_code.strip() == "0", f"exit status {exit_code.strip()} after {took:.1f} s"
        assert took < KILL_TIMEOUT_S, f"stop took {took:.1f} s: it was killed, not stopped"

        assert _lock_holder(agent) is None, "the lock is released on stop"
        info = requests.get(f"{agent}/v1/session/info/{session}", timeout=5)
        assert info.json() == [], "the session is destroyed on stop"
    finally:
        output = image.podman("logs", name, check=False)
        logs = output.stdout + output.stderr
        print(logs[-4000:])  # shown only when the test fails
        image.podman("rm", "--force", "--time", "0", name, check=False)
    assert "Traceback" not in logs


def _leader_status(listen: str) -> dict[str, Any] | None:
    status: dict[str, Any] = requests.get(f"http://{listen}/status", timeout=2).json()
    return status if status["state"] == "Leader" else None


def _lock_holder(agent: str) -> str | None:
    reply = requests.get(f"{agent}/v1/kv/{LOCK_KEY}", timeout=5)
    reply.raise_for_status()
    [entry] = reply.json()
    session = entry.get("Session")
    return str(session) if session else None
