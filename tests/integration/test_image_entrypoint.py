"""The container image, emulated without a Docker engine: what the Dockerfile builds runs.

There is no Docker daemon here, so the Dockerfile is followed step by step on this machine:

* build stage: its COPY lines copy the build context into a scratch `WORKDIR`, and its RUN
  line (`pip wheel ...`) runs there in a fresh virtualenv, container paths mapped to a
  scratch folder;
* runtime stage: its `pip install --no-index /wheels/*.whl` runs in another fresh virtualenv,
  with the build stage's wheels where the bind mount puts them. Its other RUN lines only
  create the system user, which is not done here;
* the ENTRYPOINT and the HEALTHCHECK command are parsed out of the Dockerfile and run with the
  image's ENV, as the image's numeric USER when the tests run as root, from `/`, so nothing
  is imported from the source tree.

Against the Consul stand-in, three such sidecars elect exactly one passing primary, the
HEALTHCHECK passes against one of them, and all three exit 0 on SIGTERM.

Not covered: the base image itself (its Python is 3.12; the virtualenvs here use the Python
running the tests), and Docker's own handling of STOPSIGNAL and HEALTHCHECK timing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import free_port, nomad_service_id, register_like_nomad, wait_for
from tests.unit.test_deploy_files import (
    DOCKERFILE,
    Instruction,
    healthcheck_command,
    read_dockerfile,
    the_instruction,
)

pytestmark = pytest.mark.slow

# Consul alone, on purpose: these tests are about what the Dockerfile builds (its wheels, its
# ENTRYPOINT, ENV, USER and HEALTHCHECK), run as the image would run them. The services are
# registered once the way Nomad registers them; Nomad's syncs are the other tests' concern.

REPO = Path(__file__).resolve().parents[2]
SERVICE = "db"
BUILD_TIMEOUT_S = 300  # a cold pip cache may have to fetch the dependencies' wheels


@dataclass(frozen=True)
class EmulatedImage:
    """The runtime stage, installed in a virtualenv: how to run its ENTRYPOINT and HEALTHCHECK."""

    bin_dir: Path
    env: dict[str, str]  # the image's ENV, plus PATH and HOME as the container would have them
    entrypoint: list[str]
    healthcheck: list[str]
    user: tuple[int, int] | None  # (uid, gid) of USER, applied only when we may switch to it

    def popen(self, extra_env: dict[str, str], log: Path,
              arguments: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        with open(log, "ab") as output:
            return subprocess.Popen([*self.entrypoint, *arguments], env=self.env | extra_env,
                                    executable=self.resolve(self.entrypoint[0]), cwd="/",
                                    stdout=output, stderr=subprocess.STDOUT, **self._as_user())

    def run(self, command: list[str], extra_env: dict[str, str],
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=self.env | extra_env, cwd="/",
                              executable=self.resolve(command[0]), capture_output=True,
                              text=True, timeout=timeout, check=False, **self._as_user())

    def resolve(self, program: str) -> str:
        found = shutil.which(program, path=self.env["PATH"])
        assert found is not None, f"{program!r} is not on the image's PATH"
        return found

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        # Docker's USER uid:gid leaves no supplementary groups; setuid alone would keep ours.
        return {"user": self.user[0], "group": self.user[1], "extra_groups": []}


# --------------------------------------------------------------------------- Dockerfile steps


class DockerfileEmulator:
    """Runs the two stages of the project's Dockerfile under `root` (a stand-in for `/`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instructions = read_dockerfile(DOCKERFILE)
        self.last_stage = max(i.stage for i in self.instructions)
        # Container paths the RUN lines use, mapped under root as they get known.
        self.paths: dict[str, Path] = {}

    def build(self) -> EmulatedImage:
        self._build_stage()
        return self._runtime_stage()

    def _build_stage(self) -> None:
        venv = self._venv("build-venv")
        workdir: Path | None = None
        for step in self._stage(0):
            if step.keyword == "WORKDIR":
                workdir = self._map(step.arguments)
                workdir.mkdir(parents=True, exist_ok=True)
            elif step.keyword == "COPY":
                assert workdir is not None, "COPY before WORKDIR"
                self._copy(step.arguments, workdir)
            elif step.keyword == "RUN":
                assert workdir is not None, "RUN before WORKDIR"
                for output in re.findall(r"--wheel-dir[= ](\S+)", step.arguments):
                    self._map(output)
                self._sh(step.arguments, venv, cwd=workdir)

    def _runtime_stage(self) -> EmulatedImage:
        venv = self._venv("runtime-venv")
        env: dict[str, str] = {}
        for step in self._stage(self.last_stage):
            if step.keyword == "ENV":
                env.update(parse_env(step.arguments))
            elif step.keyword == "RUN" and "pip install" in step.arguments:
                self._sh(self._apply_mounts(step.arguments), venv, cwd=self.root)
            elif step.keyword == "RUN":
                # Only the system user is created here; doing that would change this machine.
                assert re.search(r"\b(groupadd|useradd)\b", step.arguments), step.arguments
        instructions = self._stage(self.last_stage)
        user = [i.arguments for i in instructions if i.keyword == "USER"][-1]
        uid, gid = (int(part) for part in user.split(":"))
        return EmulatedImage(
            bin_dir=venv / "bin",
            env={**env, "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                 "HOME": "/nonexistent"},
            entrypoint=the_instruction(self.instructions, "ENTRYPOINT").exec_form(),
            healthcheck=healthcheck_command(self.instructions),
            user=(uid, gid) if can_run_as(uid, gid, venv / "bin" / "python") else None,
        )

    def _stage(self, stage: int) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == stage and i.keyword != "FROM"]

    def _venv(self, name: str) -> Path:
        venv = self.root / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        return venv

    def _copy(self, arguments: str, workdir: Path) -> None:
        *sources, destination = shlex.split(arguments)
        assert not any(s.startswith("--") for s in sources), "build-stage COPY takes no flags"
        target = workdir / destination
        target.mkdir(parents=True, exist_ok=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")  # as .dockerignore
        for source in sources:
            path = REPO / source
            if path.is_dir():  # Docker copies a directory's contents, not the directory
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
            else:
                shutil.copy2(path, target / path.name)

    def _apply_mounts(self, command: str) -> str:
        """Drop `--mount=type=bind,from=build,source=S,target=T`, mapping T to where S went."""
        words = command.split(" ")
        while words and words[0].startswith("--mount="):
            options = dict(part.split("=", 1) for part in words.pop(0)[8:].split(","))
            assert options.get("type") == "bind" and "from" in options, options
            self.paths[options["target"]] = self.paths[options["source"]]
        return " ".join(words)

    def _map(self, container_path: str) -> Path:
        assert container_path.startswith("/"), container_path
        mapped = self.paths.setdefault(container_path, self.root / container_path.lstrip("/"))
        return mapped

    def _sh(self, command: str, venv: Path, cwd: Path) -> None:
        for container_path, mapped in sorted(self.paths.items(), key=lambda p: -len(p[0])):
            command = re.sub(rf"(?<![\w./-]){re.escape(container_path)}(?=/|\s|$)",
                             str(mapped), command)
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
        # Keep this machine's pip settings (index mirrors, certificates), as a build host's
        # network settings would apply to `docker build`.
        env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
        result = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                check=False)
        assert result.returncode == 0, f"RUN {command}\n{result.stdout[-3000:]}{result.stderr}"


def can_run_as(uid: int, gid: int, python: Path) -> bool:
    """Whether we may switch to uid:gid and that user can run this interpreter.

    Needs root; and an interpreter installed under a private home (pyenv in /root) is out of
    the user's reach. Then the sidecars run as the current user instead.
    """
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run([str(python), "-c", "pass"], user=uid, group=gid,
                               extra_groups=[], capture_output=True, timeout=30, check=False)
    except PermissionError:
        return False
    return probe.returncode == 0


def parse_env(arguments: str) -> dict[str, str]:
    """`ENV A=1 B=2` (the key=value form; the legacy `ENV A 1` form is not used)."""
    pairs = [word.split("=", 1) for word in shlex.split(arguments)]
    assert all(len(pair) == 2 for pair in pairs), f"ENV in the legacy form: {arguments}"
    return dict((key, value) for key, value in pairs)


@pytest.fixture(scope="module")
def image() -> Iterator[EmulatedImage]:
    # Not pytest's tmp_path: its parent is private to root, and the image's USER must be able
    # to reach the virtualenv.
    root = Path(tempfile.mkdtemp(prefix="consul-leader-image-"))
    root.chmod(0o755)
    try:
        yield DockerfileEmulator(root).build()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(image: EmulatedImage) -> Iterator[Path]:
    """A scratch folder the image's user may write to (alloc directories, logs)."""
    path = Path(tempfile.mkdtemp(prefix="consul-leader-run-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- tests


def test_entrypoint_from_the_installed_wheels_prints_its_usage(image: EmulatedImage) -> None:
    result = image.run([*image.entrypoint, "--help"], {})
    assert result.returncode == 0, result.stderr
    assert "CONSUL_LEADER_SERVICE_NAME" in result.stdout
    assert "CONSUL_HTTP_ADDR" in result.stdout


def test_entrypoint_is_the_installed_wheel_not_the_source_tree(image: EmulatedImage) -> None:
    python = image.bin_dir / "python"
    code = "import consul_leader.adapters as a; print(a.__file__)"
    result = image.run([str(python), "-c", code], {})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(image.bin_dir.parent)


def test_entrypoint_rejects_bad_configuration_with_status_2(image: EmulatedImage) -> None:
    result = image.run(image.entrypoint, {"CONSUL_LEADER_TTL": "soon"})
    assert result.returncode == 2
    assert "CONSUL_LEADER_TTL" in result.stderr


def test_healthcheck_fails_when_nothing_listens(image: EmulatedImage) -> None:
    result = image.run(image.healthcheck, {"CONSUL_LEADER_LISTEN": f"127.0.0.1:{free_port()}"})
    assert result.returncode != 0


@dataclass
class RunningSidecar:
    process: subprocess.Popen[bytes]
    service_id: str
    listen: str
    log: Path


def start_sidecar(image: EmulatedImage, agent: str, workdir: Path, index: int) -> RunningSidecar:
    alloc_id = str(uuid.uuid4())
    service_id = nomad_service_id(alloc_id, SERVICE, SERVICE)
    register_like_nomad(agent, service_id, SERVICE, 5432 + index)
    alloc_dir = workdir / f"alloc-{index}"
    alloc_dir.mkdir()
    alloc_dir.chmod(0o777)
    listen = f"127.0.0.1:{free_port()}"
    env = {
        "CONSUL_HTTP_ADDR": agent,
        "NOMAD_ALLOC_ID": alloc_id,
        "NOMAD_ALLOC_DIR": str(alloc_dir),
        "CONSUL_LEADER_SERVICE_NAME": SERVICE,
        "CONSUL_LEADER_SERVICE_IDS": service_id,
        "CONSUL_LEADER_REPLICA_LABEL": "replica",
        "CONSUL_LEADER_TTL": "3s",
        "CONSUL_LEADER_SLEEP": "1",
        "CONSUL_LEADER_LOG_LEVEL": "info",
        "CONSUL_LEADER_LISTEN": listen,
    }
    log = workdir / f"sidecar-{index}.log"
    return RunningSidecar(image.popen(env, log), service_id, listen, log)


def single_passing_primary(agent: str) -> str | None:
    """The service ID Consul lists as the one passing primary; None unless exactly one."""
    reply = requests.get(f"{agent}/v1/health/service/{SERVICE}",
                         params={"tag": "primary", "passing": ""}, timeout=2)
    reply.raise_for_status()
    primaries = [entry["Service"]["ID"] for entry in reply.json()]
    return primaries[0] if len(primaries) == 1 else None


def stop(sidecars: list[RunningSidecar]) -> dict[str, int | None]:
    """SIGTERM all, then collect exit statuses (None: still running after the deadline)."""
    for sidecar in sidecars:
        if sidecar.process.poll() is None:
            sidecar.process.send_signal(signal.SIGTERM)
    statuses: dict[str, int | None] = {}
    for sidecar in sidecars:
        try:
            statuses[sidecar.service_id] = sidecar.process.wait(10)
        except subprocess.TimeoutExpired:
            statuses[sidecar.service_id] = None
            sidecar.process.kill()
            sidecar.process.wait()
    return statuses


def logs(sidecars: list[RunningSidecar]) -> str:
    return "\n".join(f"===== {s.service_id}\n{s.log.read_text(errors='replace')[-4000:]}"
                     for s in sidecars)


def test_three_image_sidecars_elect_one_primary_and_exit_0_on_sigterm(
    image: EmulatedImage, workdir: Path
) -> None:
    from tests.consul_double import ConsulDouble  # the stand-in; only this test needs it

    sidecars: list[RunningSidecar] = []
    with ConsulDouble(nodes=("n1", "n2", "n3"), session_ttl_min=1.0,
                      rpc_hold_timeout=0.5) as consul:
        try:
            for index, node in enumerate(("n1", "n2", "n3")):
                sidecars.append(start_sidecar(image, consul.node_addr(node), workdir, index))
            agent = consul.node_addr("n1")
            primary = wait_for(lambda: single_passing_primary(agent), timeout=20,
                               what="exactly one passing primary")
            leader = next(s for s in sidecars if s.service_id == primary)

            check = image.run(image.healthcheck, {"CONSUL_LEADER_LISTEN": leader.listen})
            assert check.returncode == 0, check.stderr
        finally:
            statuses = stop(sidecars)
            print(logs(sidecars))  # pytest shows it only if the test fails
    assert statuses == {s.service_id: 0 for s in sidecars}
