"""The sidecars of a chaos cluster, behind one interface whatever runs them.

* `TaskSidecar`: the sidecar task ("leader") of one allocation of the Nomad model. Nomad
  starts it, restarts it after the restart delay when it exits, and stops it in its own
  order (kill_signal, SIGKILL after kill_timeout). One lane per allocation.
* `ProcessSidecar`: a sidecar process the cluster starts itself beside a service registered
  as Nomad would (the Consul-only setting, for scenarios about Consul alone).

A service in Consul belongs to a sidecar when its ID or one of its Meta values names the
sidecar's allocation (`names_allocation`): Nomad's task service
(`_nomad-task-<alloc>-...`) and any registration the sidecar makes for that allocation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.harness import wait_for
from tests.nomad_double import Allocation
from tests.nomad_double.jobs import PORT_LABEL, SIDECAR_TASK

REPO = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 8.0  # the Consul-only setting's grace before SIGKILL at teardown
STOP_SIGNALS = ("SIGTERM", "SIGKILL")
STATUS_PORT_LABEL = "leader"  # the group port the sidecar's HTTP listener binds


@dataclass(frozen=True)
class ProcessExit:
    """How one sidecar process ended: the stop signals it got (in order) and its status.
    `deaf`: the scenario made it ignore SIGTERM on purpose."""

    name: str
    code: int | None
    signals: tuple[str, ...]
    deaf: bool = False

    @property
    def crashed(self) -> bool:
        if not self.signals:
            return True  # it ended although nobody asked it to
        if self.signals[-1] == "SIGKILL":
            # A SIGKILL after a SIGTERM: it did not leave within the grace period.
            return "SIGTERM" in self.signals and not self.deaf
        return self.code != 0  # SIGTERM: a clean shutdown exits 0

    def describe(self) -> str:
        how = " then ".join(self.signals) if self.signals else "nobody stopped it"
        return f"{self.name} exited with {self.code} ({how})"


class Member(ABC):
    """One sidecar: its lane name, where it runs, what it serves, how it ended."""

    name: str
    node: str
    agent: str  # the node's Consul agent (not the fault proxy)
    alloc_id: str
    status_port: int
    label: str

    @property
    @abstractmethod
    def target_service_id(self) -> str:
        """The ID of the task service Nomad registers for this allocation."""

    @property
    @abstractmethod
    def target_port(self) -> int: ...

    @property
    @abstractmethod
    def token_path(self) -> Path: ...

    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def send_signal(self, sig: signal.Signals) -> None: ...

    @abstractmethod
    def await_restart(self, timeout: float) -> None:
        """After it exited: have it run again, as Nomad's restart policy does."""

    @abstractmethod
    def exits(self) -> list[ProcessExit]:
        """Every process of this sidecar that has ended."""

    @abstractmethod
    def log_paths(self) -> list[Path]: ...

    def names_allocation(self, service: Mapping[str, Any]) -> bool:
        texts = [str(service.get("ID", "")), *map(str, (service.get("Meta") or {}).values())]
        return any(self.alloc_id in text for text in texts)

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        reply = requests.get(f"http://127.0.0.1:{self.status_port}/status", timeout=timeout)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.log_paths()
                       if path.exists())


def _stop_signals(sent: list[tuple[float, str]]) -> tuple[str, ...]:
    return tuple(name for _, name in sent if name in STOP_SIGNALS)


class TaskSidecar(Member):
    """The sidecar task of one allocation of the Nomad model."""

    def __init__(self, name: str, allocation: Allocation, agent: str, *, deaf: bool = False,
                 replaces: str | None = None) -> None:
        self.name = name
        self.allocation = allocation
        self.node = allocation.node
        self.agent = agent
        self.alloc_id = allocation.id
        self.status_port = allocation.ports[STATUS_PORT_LABEL]
        self.deaf = deaf
        self._signalled_at = float("-inf")  # when we last sent it SIGTERM or SIGKILL
        instead = f", replaces {replaces}" if replaces else ""
        self.label = f"{name} on node {self.node} (alloc {self.alloc_id[:8]}{instead})"

    @property
    def task(self) -> Any:  # tests.nomad_double.TaskRunner
        return self.allocation.task(SIDECAR_TASK)

    @property
    def target_service_id(self) -> str:
        return self.allocation.service_ids()[0]  # the main task's one service

    @property
    def target_port(self) -> int:
        return self.allocation.ports[PORT_LABEL]

    @property
    def token_path(self) -> Path:
        return Path(self.task.dirs.secrets) / "consul_token"

    @property
    def allocation_live(self) -> bool:
        """Nomad still wants it running (not stopped, drained or finished)."""
        return self.allocation.desired_status == "run" and not self.allocation.finished

    def running(self) -> bool:
        process = self.task.process
        return process is not None and process.running()

    def send_signal(self, sig: signal.Signals) -> None:
        process = self.task.process
        if sig.name in STOP_SIGNALS:
            self._signalled_at = time.monotonic()
        if process is None or not process.send_signal(sig):
            raise RuntimeError(f"{self.name}: no running sidecar process to send {sig.name}")

    def runs_since_last_stop_signal(self) -> bool:
        """A process of the task runs that started after our last SIGTERM or SIGKILL (the
        signalled one may still look alive until it is reaped)."""
        process = self.task.process
        return (process is not None and process.running()
                and process.started > self._signalled_at)

    def await_restart(self, timeout: float) -> None:
        """Wait for Nomad to run a new process of the task."""
        wait_for(self.runs_since_last_stop_signal, timeout,
                 f"Nomad to restart {self.name}'s sidecar task")

    def exits(self) -> list[ProcessExit]:
        return [ProcessExit(self.name, p.exit_code, _stop_signals(p.signals_sent), self.deaf)
                for p in self.task.processes if not p.running()]

    def log_paths(self) -> list[Path]:
        return [Path(self.task.dirs.stdout), Path(self.task.dirs.stderr)]


class ProcessSidecar(Member):
    """A sidecar process started by the cluster (the Consul-only setting)."""

    def __init__(self, name: str, node: str, agent: str, alloc_id: str, service_id: str,
                 service_port: int, status_port: int, env: dict[str, str],
                 log_path: Path, token_path: Path) -> None:
        self.name = name
        self.node = node
        self.agent = agent
        self.alloc_id = alloc_id
        self._service_id = service_id
        self._service_port = service_port
        self.status_port = status_port
        self.env = env
        self.log_path = log_path
        self._token_path = token_path
        self.label = f"{name} on node {node}"
        self.process: subprocess.Popen[bytes] | None = None
        self._signals: list[tuple[float, str]] = []
        self._exits: list[ProcessExit] = []

    @property
    def target_service_id(self) -> str:
        return self._service_id

    @property
    def target_port(self) -> int:
        return self._service_port

    @property
    def token_path(self) -> Path:
        return self._token_path

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consul_leader"], env=self.env, cwd=REPO,
                stdout=log, stderr=subprocess.STDOUT)
        self._signals = []

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            raise RuntimeError(f"{self.name}: not started")
        self._signals.append((time.monotonic(), sig.name))
        self.process.send_signal(sig)

    def await_restart(self, timeout: float) -> None:
        """Nobody restarts it but us: reap the old process and start a new one now."""
        self.reap()
        self.start()

    def request_stop(self) -> None:
        """Teardown, first half: SIGCONT (it may be paused), then SIGTERM."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                assert self.process is not None
                os.kill(self.process.pid, signal.SIGCONT)
                self.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        """Wait for the exit (SIGKILL after STOP_TIMEOUT) and keep how it ended."""
        process = self.process
        if process is None:
            return
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            process.wait()
        self._exits.append(ProcessExit(self.name, process.returncode,
                                       _stop_signals(self._signals)))
        self.process = None

    def exits(self) -> list[ProcessExit]:
        return list(self._exits)

    def log_paths(self) -> list[Path]:
        return [self.log_path]
