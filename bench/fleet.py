"""Instances of one service beside a stand-in: consul-leader sidecars or baseline clients.

A `Fleet` wraps the shared harness's groups. By default (`on_nomad`) each instance is the
prestart sidecar task of an allocation of the Nomad model (tests.harness.NomadGroup): Nomad
registers the main task's service and syncs it every 2 x SLEEP, starts the instance's process
(`python -m consul_leader`, or the shell loop's emulation `python -m bench.baseline` as the
same task), restarts it after the restart delay when it dies, and retiring an instance is
Nomad stopping its allocation (main task and its service first, then the instance). With
`on_nomad=False` the services are registered once the way Nomad registers them and nothing
syncs them again (`tests.harness.Group`).

Nomad's clients talk to the same agents as the instances; their own requests (syncs, check
heartbeats) are counted by the model, so loads can be given for the instances alone
(`Fleet.nomad_requests`). The main task is `sleep`, so footprints stay the instances'.

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
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.settings import Timings
from tests.consul_double import ConsulDouble
from tests.harness import (
    REPO,
    ConsulView,
    Group,
    NomadGroup,
    NomadSidecar,
    Sidecar,
    nomad_clients,
    nomad_requests,
)
from tests.nomad_double import NomadDouble

OBSERVER_NODE = "obs"  # hosts no instance: the benchmark's own reads go through it
STOP_GRACE = 6.0  # seconds a stopped process gets before SIGKILL (the sidecar needs < 5)
MAIN_COMMAND = ("sleep", "infinity")  # the main task beside each instance: next to nothing


class Kind(enum.Enum):
    SIDECAR = "consul-leader"
    BASELINE = "shell loop"

    @property
    def module(self) -> str:
        return "consul_leader" if self is Kind.SIDECAR else "bench.baseline"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]


@contextlib.contextmanager
def stand_in(nodes: Iterable[str]) -> Iterator[ConsulDouble]:
    """A fresh stand-in with the given nodes plus the observer node, short TTLs allowed."""
    names = (*nodes, OBSERVER_NODE)
    with ConsulDouble(nodes=names, session_ttl_min=1.0, rpc_hold_timeout=0.5) as consul:
        yield consul


def instance_nodes(consul: ConsulDouble) -> tuple[str, ...]:
    """The nodes that host instances (and Nomad clients): all but the observer's."""
    return tuple(node for node in consul.node_names if node != OBSERVER_NODE)


@contextlib.contextmanager
def shared_nomad(consul: ConsulDouble, workdir: Path, timings: Timings
                 ) -> Iterator[NomadDouble]:
    """Nomad clients on every instance node, syncing every 2 x SLEEP, for fleets to share
    (`Fleet(shared_nomad=...)`); whatever still runs is stopped when the block ends."""
    nomad = nomad_clients(consul, workdir / "nomad", period=2 * timings.sleep,
                          nodes=instance_nodes(consul))
    try:
        yield nomad
    finally:
        nomad.close()


def launch(instance: Sidecar, kind: Kind) -> None:
    """Start `instance`'s process as `kind`, logging to its log file (Consul alone)."""
    with open(instance.log_path, "ab") as log:
        instance.process = subprocess.Popen(
            kind.command, env=instance.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


@dataclass
class Fleet:
    consul: ConsulDouble
    kind: Kind
    workdir: Path
    timings: Timings
    service: str = "db"
    on_nomad: bool = True
    shared_nomad: NomadDouble | None = None  # one Nomad client per node for several fleets
    group: Group = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "service": self.service, "ttl": self.timings.ttl_text,
            "sleep": self.timings.sleep_text, "lock_delay": self.timings.lock_delay_text,
            "extra_env": {"CONSUL_LEADER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warn")},
        }
        if self.on_nomad:
            self.group = NomadGroup(self.consul, self.workdir, nodes=instance_nodes(self.consul),
                                    shared_nomad=self.shared_nomad, main_command=MAIN_COMMAND,
                                    **settings)
        else:
            self.group = Group(self.consul, self.workdir, **settings)

    # -- membership -----------------------------------------------------------------------

    def add(self, node: str) -> Sidecar:
        if isinstance(self.group, NomadGroup):
            command = None if self.kind is Kind.SIDECAR else self.kind.command
            return self.group.add(node, command=command)
        instance = self.group.add(node, start=False)
        launch(instance, self.kind)
        return instance

    @property
    def members(self) -> list[Sidecar]:
        """Instances whose process runs."""
        return [s for s in self.group.sidecars if s.running()]

    def retire(self, instance: Sidecar, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop `instance` as Nomad stops an allocation (main task and its service first,
        then `kill_signal` to the instance, SIGKILL after kill_timeout); on Consul alone,
        `sig` to the process (if it still runs), then its service deregistered."""
        if isinstance(instance, NomadSidecar):
            instance.stop()
            return
        if instance.running():
            instance.send(sig)
        wait_exit(instance, STOP_GRACE)
        deregister(instance)

    def replace(self, instance: Sidecar) -> Sidecar:
        """Retire `instance` and start a new allocation on the same node."""
        self.retire(instance)
        return self.add(instance.node)

    def nomad_requests(self, node: str | None = None) -> int:
        """Requests Nomad's clients made to the agents so far (0 on Consul alone)."""
        if isinstance(self.group, NomadGroup):
            return nomad_requests(self.group.nomad, node)
        return 0

    # -- what Consul shows ----------------------------------------------------------------

    def view(self) -> ConsulView:
        return ConsulView.of(self.consul)

    def primary(self, view: ConsulView | None = None) -> Sidecar | None:
        """The running member Consul lists as the one passing primary, if exactly one."""
        view = view or self.view()
        owners = {service_id: member for member in self.members
                  for service_id in view.owned(self.service, member.owns)}
        primaries = view.passing_with(list(owners), self.group.primary_label)
        if len(primaries) != 1:
            return None
        return owners[primaries[0]]

    def await_primary(self, timeout: float) -> Sidecar:
        """The one passing primary, waiting for a moment Consul lists exactly one (with
        Nomad in the loop its periodic syncs take the primary out of ?passing for a while)."""
        deadline = time.monotonic() + timeout
        while (primary := self.primary()) is None:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no single primary within {timeout:g}s: {self.describe()}")
            time.sleep(0.02)
        return primary

    def steady(self, view: ConsulView | None = None) -> bool:
        """One passing primary, on the node of the session holding the key; every other
        member labelled replica and not primary (labels read from all of a member's
        instances) and listed as passing; every member joined the election: each node holds
        at least as many live sessions of the election as members run there. (Sessions, not
        Meta.session: Nomad's periodic sync takes Meta.session off, and the shell loop never
        writes it back.)"""
        view = view or self.view()
        leader = self.primary(view)
        if leader is None:
            return False
        sessions = {s["ID"]: s for s in view.state["sessions"]
                    if s.get("Name") in self._session_names()}
        holder = sessions.get(view.holder(self.group.kv_path) or "")
        if holder is None or holder["Node"] != leader.node:
            return False
        joined = Counter(session["Node"] for session in sessions.values())
        running = Counter(member.node for member in self.members)
        if any(joined[node] < count for node, count in running.items()):
            return False
        for member in self.members:
            if member is leader:
                continue
            owned = view.owned(self.service, member.owns)
            tags = {tag for service in owned.values() for tag in service["Tags"]}
            if self.group.primary_label in tags or self.group.replica_label not in tags:
                return False
            # Listed as a passing replica: a member that just started and has not vouched for
            # its role yet would be listed only at its first renew if it won the next race.
            if not any(view.passing(service_id) for service_id in owned):
                return False
        return True

    def _session_names(self) -> set[str]:
        # The sidecar names its session after the service; consul.sh (bench/baseline.py)
        # calls it "Consul-Leader API Lock: <service>".
        return {self.service, f"Consul-Leader API Lock: {self.service}"}

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
        return self.group.describe()


def wait_all_steady(fleets: list[Fleet], timeout: float, period: float = 0.2) -> float:
    """Wait until every fleet has been steady, judged on one snapshot per round; returns when
    the last one was. (Not all at one instant: with Nomad in the loop, its periodic syncs
    take each primary out of ?passing for a while, so many groups are seldom all steady at
    once.)"""
    if not fleets:
        return time.monotonic()
    consul = fleets[0].consul
    deadline = time.monotonic() + timeout
    pending = list(fleets)
    while True:
        view = ConsulView.of(consul)
        pending = [fleet for fleet in pending if not fleet.steady(view)]
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
            for status in instance.ended_on_its_own():
                lines = instance.logs().strip().splitlines() or ["(empty log)"]
                found.append(f"{fleet.kind.value} {instance.name} on {instance.node} exited "
                             f"with status {status}: {lines[-1][:160]}")
    return found


def stop_fleets(fleets: Iterable[Fleet]) -> list[str]:
    """Stop every instance of every fleet at once (Nomad: every allocation in Nomad's order;
    Consul alone: SIGTERM, SIGKILL after STOP_GRACE). Returns the instances that had ended
    on their own before (see `unexpected_exits`)."""
    fleets = list(fleets)
    unexpected = unexpected_exits(fleets)
    stoppers = [threading.Thread(target=fleet.group.stop_all, kwargs={"timeout": STOP_GRACE},
                                 daemon=True) for fleet in fleets]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()
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
