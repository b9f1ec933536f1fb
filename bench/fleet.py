"""Instances of one service beside a stand-in: consul-leader sidecars or baseline clients.

A `Fleet` wraps the shared harness's `Group` (services registered the way Nomad registers
them, one allocation per instance) and starts each instance as its own process: the sidecar
(`python -m consul_leader`) or the shell loop's emulation (`python -m bench.baseline`), with the
same environment. Retiring an instance does what Nomad does when an allocation stops: the
process is stopped and the task's service deregistered.

Sidecars log at the production default level (warn): debug logging would be counted as
their CPU.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.settings import Timings
from tests.consul_double import ConsulDouble
from tests.harness import REPO, ConsulView, Group, Sidecar

OBSERVER_NODE = "obs"  # hosts no instance: the benchmark's own reads go through it
STOP_GRACE = 6.0  # seconds a stopped process gets before SIGKILL (the sidecar needs < 5)


class Kind(enum.Enum):
    SIDECAR = "consul-leader"
    BASELINE = "shell loop"

    @property
    def module(self) -> str:
        return "consul_leader" if self is Kind.SIDECAR else "bench.baseline"


@contextlib.contextmanager
def stand_in(nodes: Iterable[str]) -> Iterator[ConsulDouble]:
    """A fresh stand-in with the given nodes plus the observer node, short TTLs allowed."""
    names = (*nodes, OBSERVER_NODE)
    with ConsulDouble(nodes=names, session_ttl_min=1.0, rpc_hold_timeout=0.5) as consul:
        yield consul


def launch(instance: Sidecar, kind: Kind) -> None:
    """Start `instance`'s process as `kind`, logging to its log file."""
    with open(instance.log_path, "ab") as log:
        instance.process = subprocess.Popen(
            [sys.executable, "-m", kind.module],
            env=instance.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@dataclass
class Fleet:
    consul: ConsulDouble
    kind: Kind
    workdir: Path
    timings: Timings
    service: str = "db"
    group: Group = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = Group(
            self.consul,
            self.workdir,
            service=self.service,
            ttl=self.timings.ttl_text,
            sleep=self.timings.sleep_text,
            lock_delay=self.timings.lock_delay_text,
            # The polling baseline labels the task's own registration, as the seed did.
            extra_env={"CONSUL_LEADER_LOG_LEVEL": "warn",
                       **({"CONSUL_LEADER_PUBLISH": "labels"} if self.kind is Kind.BASELINE
                          else {})},
        )

    # -- membership -----------------------------------------------------------------------

    def add(self, node: str) -> Sidecar:
        instance = self.group.add(node, start=False)
        launch(instance, self.kind)
        return instance

    @property
    def members(self) -> list[Sidecar]:
        """Instances whose process runs."""
        return [s for s in self.group.sidecars if s.running()]

    def retire(self, instance: Sidecar, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop `instance` (if it still runs) and deregister its task's service, as Nomad does
        when an allocation stops."""
        if instance.running():
            instance.send(sig)
        wait_exit(instance, STOP_GRACE)
        deregister(instance)

    def replace(self, instance: Sidecar) -> Sidecar:
        """Retire `instance` and start a new allocation on the same node."""
        self.retire(instance)
        return self.add(instance.node)

    # -- what Consul shows ----------------------------------------------------------------

    def view(self) -> ConsulView:
        return ConsulView.of(self.consul)

    def primary(self, view: ConsulView | None = None) -> Sidecar | None:
        """The running member Consul lists as the one passing primary, if exactly one."""
        view = view or self.view()
        primaries = view.passing_with(self._service_ids(), self.group.primary_label)
        if len(primaries) != 1:
            return None
        return next((s for s in self.members if s.published_id == primaries[0]), None)

    def steady(self, view: ConsulView | None = None) -> bool:
        """One passing primary holding the key; every other member labelled replica; every
        member's Meta.session a live session (so it has joined the election)."""
        view = view or self.view()
        leader = self.primary(view)
        if leader is None:
            return False
        holder = view.holder(self.group.kv_path)
        live = view.session_ids()
        for member in self.members:
            service = view.service(member.published_id)
            if service is None or service["Meta"].get("session") not in live:
                return False
            tags = service["Tags"]
            if member is leader:
                if service["Meta"]["session"] != holder:
                    return False
            elif self.group.primary_label in tags or self.group.replica_label not in tags:
                return False
        return True

    def wait_steady(self, timeout: float) -> float:
        """Wait until `steady()`; returns when (monotonic). Raises at the deadline."""
        deadline = time.monotonic() + timeout
        while not self.steady():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.kind.value} fleet not steady after {timeout:.0f}s: "
                                   f"{self.describe()}")
            time.sleep(0.05)
        return time.monotonic()

    def describe(self) -> str:
        view = self.view()
        parts = []
        for member in self.members:
            service = view.service(member.published_id) or {}
            parts.append(f"{member.name}@{member.node} tags={service.get('Tags')} "
                         f"passing={view.passing(member.published_id)}")
        return f"holder={view.holder(self.group.kv_path)} " + "; ".join(parts)

    def _service_ids(self) -> list[str]:
        return [s.published_id for s in self.members]


def wait_all_steady(fleets: list[Fleet], timeout: float, period: float = 0.2) -> float:
    """Wait until every fleet is steady, judged on one snapshot per round; returns when."""
    if not fleets:
        return time.monotonic()
    consul = fleets[0].consul
    deadline = time.monotonic() + timeout
    while True:
        view = ConsulView.of(consul)
        pending = [fleet for fleet in fleets if not fleet.steady(view)]
        if not pending:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pending)} of {len(fleets)} fleets not steady after "
                               f"{timeout:.0f}s; first: {pending[0].describe()}")
        time.sleep(period)


def wait_exit(instance: Sidecar, grace: float) -> int | None:
    """Wait for the process to end; SIGKILL it after `grace` seconds. Its exit status."""
    if instance.process is None:
        return None
    try:
        return instance.process.wait(grace)
    except subprocess.TimeoutExpired:
        instance.process.kill()
        return instance.process.wait()


def deregister(instance: Sidecar) -> None:
    """Take the task's service away on its node's agent (best effort: the node may be down)."""
    with contextlib.suppress(requests.RequestException):
        requests.put(f"{instance.agent}/v1/agent/service/deregister/{instance.service_id}",
                     timeout=2)


def unexpected_exits(fleets: Iterable[Fleet]) -> list[str]:
    """Instances whose process ended though nobody stopped it, with their last log line."""
    found = []
    for fleet in fleets:
        for instance in fleet.group.sidecars:
            status = instance.process.poll() if instance.process else None
            if status is not None and instance.stopped_by is None:
                lines = instance.logs().strip().splitlines() or ["(empty log)"]
                found.append(f"{fleet.kind.value} {instance.name} on {instance.node} exited "
                             f"with status {status}: {lines[-1][:160]}")
    return found


def stop_fleets(fleets: Iterable[Fleet]) -> list[str]:
    """SIGTERM every running process of every fleet at once, then wait for each. Returns the
    instances that had ended on their own before (see `unexpected_exits`)."""
    fleets = list(fleets)
    unexpected = unexpected_exits(fleets)
    instances = [s for fleet in fleets for s in fleet.group.sidecars if s.process is not None]
    for instance in instances:
        if instance.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(instance.pid, signal.SIGCONT)
                instance.send(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for instance in instances:
        wait_exit(instance, max(0.1, deadline - time.monotonic()))
    return unexpected


def start_staggered(fleet_nodes: Iterable[tuple[Fleet, str]], stagger: float) -> float:
    """Start one instance per (fleet, node), `stagger` seconds apart; returns the first start."""
    first = time.monotonic()
    for position, (fleet, node) in enumerate(fleet_nodes):
        # Spacing the starts is the point: 100 interpreters at once would measure the herd.
        pause = first + position * stagger - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        fleet.add(node)
    return first

