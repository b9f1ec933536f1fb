"""Real sidecar processes against the Consul stand-in, and an observer of what Consul shows.

Shared by the end-to-end tests, the chaos suite, the benchmarks and the demo. Nothing here
mocks anything: sidecars are `python -m consul_leader` processes talking HTTP to the stand-in's
agents, and they get real signals.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            last = condition()
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


_LISTEN_PORTS = range(20000, 32000)  # below Linux's ephemeral range (32768-60999)
_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A port for a process to listen on later. Port 0 would come from the ephemeral range,
    where any outgoing connection may take it before the process binds it; so pick one
    below it, check it is free now, and never hand it out twice in this process."""
    with _port_lock:
        start = random.randrange(len(_LISTEN_PORTS))
        for offset in range(len(_LISTEN_PORTS)):
            port = _LISTEN_PORTS[(start + offset) % len(_LISTEN_PORTS)]
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free listening port left")


def nomad_service_id(alloc_id: str, task: str, service: str, port_label: str = "db") -> str:
    # client/serviceregistration/id.go: _nomad-task-<alloc>-<task>-<service>-<port label>
    return f"_nomad-task-{alloc_id}-{task}-{service}-{port_label}"


def register_like_nomad(
    agent: str,
    service_id: str,
    name: str,
    port: int,
    tags: list[str] | None = None,
    token: str | None = None,
) -> None:
    body = {
        "ID": service_id,
        "Name": name,
        "Tags": tags or ["v1"],
        "Port": port,
        "Address": "127.0.0.1",
        "Meta": {"external-source": "nomad"},
        "EnableTagOverride": True,
    }
    headers = {"X-Consul-Token": token} if token else {}
    reply = requests.put(
        f"{agent}/v1/agent/service/register",
        params={"replace-existing-checks": "true"},
        json=body,
        headers=headers,
        timeout=5,
    )
    reply.raise_for_status()


@dataclass
class Sidecar:
    """One sidecar process beside one Nomad-like task on one node."""

    name: str
    node: str
    agent: str
    alloc_id: str
    service_id: str
    status_port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stopped_by: str | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consul_leader"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.stopped_by = sig.name
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        reply = requests.get(f"http://127.0.0.1:{self.status_port}/status", timeout=timeout)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def endpoint(self, path: str, timeout: float = 1.0) -> int:
        return requests.get(
            f"http://127.0.0.1:{self.status_port}{path}", timeout=timeout
        ).status_code

    def role_endpoints_agree(self) -> bool | None:
        """/primary answers 200 only as Leader, /replica only as Follower.

        None when the state changed while we asked (try again)."""
        before = self.status()
        primary, replica = self.endpoint("/primary"), self.endpoint("/replica")
        after = self.status()
        if (before["state"], before["published"]) != (after["state"], after["published"]):
            return None
        leading = before["state"] == "Leader" and before["published"]
        return (primary == 200) == leading and (replica == 200) == (before["state"] == "Follower")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def agent_service(self) -> dict[str, Any]:
        """The task's own registration (what Nomad registered)."""
        return self._service(self.service_id)

    @property
    def published_id(self) -> str:
        """The instance that carries this sidecar's role: its own registration for the task's
        service (the default), or the task's service itself in the seed-compatible mode."""
        if self.env.get("CONSUL_LEADER_PUBLISH") == "labels":
            return self.service_id
        return f"consul-leader-{self.alloc_id}-{self.service_id}"

    def published_service(self) -> dict[str, Any]:
        return self._service(self.published_id)

    def _service(self, service_id: str) -> dict[str, Any]:
        reply = requests.get(f"{self.agent}/v1/agent/service/{service_id}", timeout=2)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result


@dataclass
class Group:
    """Sidecars of one service group (one per node), plus helpers to look at Consul."""

    consul: Any  # tests.consul_double.ConsulDouble
    workdir: Path
    service: str = "db"
    ttl: str = "3s"
    sleep: str = "2"
    lock_delay: str = "0s"
    primary_label: str = "primary"
    replica_label: str | None = "replica"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    sidecars: list[Sidecar] = field(default_factory=list)

    @property
    def kv_path(self) -> str:
        return f"consul-leader/{self.service}/lock"

    def add(
        self, node: str, *, start: bool = True, env: Mapping[str, str] | None = None
    ) -> Sidecar:
        index = len(self.sidecars)
        alloc_id = str(uuid.uuid4())
        agent = self.consul.node_addr(node)
        service_id = nomad_service_id(alloc_id, "db", self.service)
        register_like_nomad(
            agent,
            service_id,
            self.service,
            5432 + index,
            token=self.extra_env.get("CONSUL_HTTP_TOKEN"),
        )
        port = free_port()
        alloc_dir = self.workdir / f"alloc-{index}"
        alloc_dir.mkdir(parents=True, exist_ok=True)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CONSUL_HTTP_ADDR": agent,
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_ALLOC_DIR": str(alloc_dir),
            "CONSUL_LEADER_SERVICE_NAME": self.service,
            "CONSUL_LEADER_PRIMARY_LABEL": self.primary_label,
            "CONSUL_LEADER_TTL": self.ttl,
            "CONSUL_LEADER_SLEEP": self.sleep,
            "CONSUL_LEADER_LOCKDELAY": self.lock_delay,
            "CONSUL_LEADER_LOG_LEVEL": "debug",
            "CONSUL_LEADER_LISTEN": f"127.0.0.1:{port}",
            "PYTHONUNBUFFERED": "1",
            **({"CONSUL_LEADER_REPLICA_LABEL": self.replica_label} if self.replica_label else {}),
            **self.extra_env,
            **(env or {}),
        }
        sidecar = Sidecar(
            f"s{index}",
            node,
            agent,
            alloc_id,
            service_id,
            port,
            full_env,
            self.workdir / f"sidecar-{index}.log",
        )
        self.sidecars.append(sidecar)
        if start:
            sidecar.start()
        return sidecar

    def any_agent(self, exclude: Callable[[str], bool] = lambda node: False) -> str:
        for node in self.consul.node_names:
            if not exclude(node) and node not in getattr(self, "_failed", set()):
                return str(self.consul.node_addr(node))
        raise AssertionError("no agent left to ask")

    def passing_primaries(self, timeout: float = 2.0) -> list[str]:
        """Service IDs Consul lists as passing primaries (what a client of the service sees)."""
        errors: list[Exception] = []
        for node in self.consul.node_names:
            try:
                reply = requests.get(
                    f"{self.consul.node_addr(node)}/v1/health/service/{self.service}",
                    params={"tag": self.primary_label, "passing": "1"},
                    timeout=timeout,
                )
            except requests.RequestException as exc:
                errors.append(exc)
                continue
            if reply.status_code == 200:
                return sorted(entry["Service"]["ID"] for entry in reply.json())
            errors.append(RuntimeError(f"{reply.status_code} {reply.text[:80]}"))
        raise requests.RequestException(f"no agent answered: {errors}")

    def the_primary(self) -> Sidecar | None:
        primaries = self.passing_primaries()
        if len(primaries) != 1:
            return None
        return next((s for s in self.sidecars if s.published_id == primaries[0]), None)

    def wait_single_primary(self, timeout: float, exclude: Sidecar | None = None) -> Sidecar:
        def found() -> Sidecar | None:
            primary = self.the_primary()
            return primary if primary is not None and primary is not exclude else None

        return wait_for(found, timeout, "exactly one passing primary")

    def leaders_by_status(self) -> list[Sidecar]:
        leaders = []
        for sidecar in self.sidecars:
            if not sidecar.running():
                continue
            with contextlib.suppress(requests.RequestException):
                if sidecar.status(timeout=0.5)["state"] == "Leader":
                    leaders.append(sidecar)
        return leaders

    def assert_role_endpoints(self, timeout: float = 3.0) -> None:
        """Every running sidecar's /primary and /replica agree with its state."""
        for sidecar in self.sidecars:
            if sidecar.running():
                wait_for(sidecar.role_endpoints_agree, timeout, f"{sidecar.name}'s role endpoints")

    def kv(self) -> dict[str, Any] | None:
        reply = requests.get(f"{self.any_agent()}/v1/kv/{self.kv_path}", timeout=2)
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        entry: dict[str, Any] = reply.json()[0]
        return entry

    def stop_all(self, timeout: float = 8.0) -> None:
        for sidecar in self.sidecars:
            if sidecar.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sidecar.pid, signal.SIGCONT)
                    sidecar.send(signal.SIGTERM)
        for sidecar in self.sidecars:
            if sidecar.process is not None:
                try:
                    sidecar.wait(timeout)
                except subprocess.TimeoutExpired:
                    sidecar.process.kill()
                    sidecar.process.wait()


@dataclass
class Sample:
    at: float
    primaries: list[str]


class HealthObserver:
    """Samples Consul's health view every `period` seconds and records every answer.

    The safety invariant is checked on every sample: never two passing primaries.
    """

    def __init__(self, group: Group, period: float = 0.05) -> None:
        self._group = group
        self._period = period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def __enter__(self) -> HealthObserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(requests.RequestException, ValueError):
                self.samples.append(Sample(started, self._group.passing_primaries(timeout=1.0)))
            self._stop.wait(max(0.0, self._period - (time.monotonic() - started)))

    def overlaps(self) -> list[Sample]:
        return [s for s in self.samples if len(s.primaries) > 1]

    def assert_safe(self) -> None:
        overlaps = self.overlaps()
        assert not overlaps, f"two passing primaries seen: {overlaps[:3]}"
        assert self.samples, "the observer got no answer at all"


@contextlib.contextmanager
def running_group(
    consul: Any, workdir: Path, nodes: list[str] | None = None, **settings: Any
) -> Iterator[Group]:
    group = Group(consul, workdir, **settings)
    try:
        for node in nodes or list(consul.node_names):
            group.add(node)
        yield group
    finally:
        group.stop_all()


def dump_logs(group: Group) -> str:
    return "\n".join(f"===== {s.name} ({s.node})\n{s.logs()[-6000:]}" for s in group.sidecars)


def request_count(consul: Any) -> int:
    """Requests the stand-in has answered since its last stats reset."""
    return int(consul.stats()["total"])


@dataclass(frozen=True)
class ConsulView:
    """One in-process snapshot of the stand-in's state (no request is sent or counted), with
    the questions tests and benchmarks ask of it."""

    state: dict[str, Any]

    @classmethod
    def of(cls, consul: Any) -> ConsulView:
        return cls(consul.snapshot())

    def holder(self, kv_path: str) -> str | None:
        """The session holding `kv_path`, or None when it is free or missing."""
        for entry in self.state["kv"]:
            if entry["Key"] == kv_path:
                return entry.get("Session") or None
        return None

    def session_ids(self) -> set[str]:
        return {session["ID"] for session in self.state["sessions"]}

    def services(self, name: str) -> dict[str, dict[str, Any]]:
        """Every registered instance of service `name`, by service ID."""
        found: dict[str, dict[str, Any]] = {}
        for node in self.state["nodes"].values():
            for service_id, service in node["services"].items():
                if service["Service"] == name:
                    found[service_id] = service
        return found

    def tagged(self, name: str, label: str) -> list[str]:
        """Service IDs of `name` carrying `label` (Consul's tag filter ignores case)."""
        return sorted(
            service_id
            for service_id, service in self.services(name).items()
            if _has_tag(service, label)
        )

    def passing_primaries(self, name: str, label: str = "primary") -> list[str]:
        """What `health/service/<name>?tag=<label>&passing` would list."""
        return [sid for sid in self.tagged(name, label) if self.passing(sid)]

    def passing_with(self, service_ids: list[str], label: str) -> list[str]:
        """Those of `service_ids` Consul would list as passing and tagged `label`."""
        return [
            sid for sid in service_ids
            if self.passing(sid) and any(_has_tag(s, label) for s in self._instances(sid))
        ]

    def passing(self, service_id: str) -> bool:
        """As `health/service?passing` decides: serfHealth and every service check passing."""
        for node in self.state["nodes"].values():
            if service_id not in node["services"]:
                continue
            checks = [c for c in node["checks"].values() if c["ServiceID"] == service_id]
            return node["serfHealth"] == "passing" and all(
                check["Status"] == "passing" for check in checks
            )
        return False

    def _instances(self, service_id: str) -> list[dict[str, Any]]:
        return [node["services"][service_id] for node in self.state["nodes"].values()
                if service_id in node["services"]]


def _has_tag(service: Mapping[str, Any], label: str) -> bool:
    return label.lower() in (tag.lower() for tag in service["Tags"])
