"""NomadDouble: Nomad clients on the stand-in's nodes, the jobs they run, and the
server-side actions the tests need (place, stop, drain).

The servers are not modelled: placement is the caller's (round robin by default), and
drain follows nomad/drainer/watch_jobs.go (handleTaskGroup) over the model's allocations.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .alloc_runner import Allocation
from .client import AclSettings, NodeConfig, NomadClient
from .jobspec import Job, TaskGroup
from .service_client import SyncSettings

DRAIN_DEADLINE = 3600.0  # nomad: `nomad node drain -deadline` default 1h
DRAIN_POLL = 0.1


class NomadDouble:
    """Nomad clients on the given Consul agents. A context manager: leaving it stops every
    allocation in Nomad's order, then the clients, then SIGKILLs anything left."""

    def __init__(self, nodes: Mapping[str, str] | Iterable[NodeConfig], workdir: Path, *,
                 sync: SyncSettings | None = None, acl: AclSettings | None = None,
                 host_env: Mapping[str, str] | None = None, seed: int | None = None) -> None:
        configs = ([NodeConfig(name, address) for name, address in nodes.items()]
                   if isinstance(nodes, Mapping) else list(nodes))
        if not configs:
            raise ValueError("a Nomad double needs at least one node")
        self.workdir = Path(workdir)
        self.settings = sync or SyncSettings()
        self.acl = acl
        rng = random.Random(seed)
        # The docker driver's task sees the image's environment, not the agent's: PATH.
        env = dict(host_env) if host_env is not None else {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._clients = {
            config.name: NomadClient(config, self.workdir / config.name, self.settings, acl,
                                     env, random.Random(rng.random()))
            for config in configs
        }
        self._placements = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @classmethod
    def for_consul(cls, consul: Any, workdir: Path, nodes: Iterable[str] | None = None,
                   **options: Any) -> NomadDouble:
        """One client per node of a running ConsulDouble (or the nodes named)."""
        names = list(nodes) if nodes is not None else list(consul.node_names)
        return cls({name: consul.node_addr(name) for name in names}, workdir, **options)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> NomadDouble:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for client in self._clients.values():
            client.start()

    def close(self) -> None:
        """Stop every live allocation (concurrently, each in Nomad's order), end the sync
        loops, then SIGKILL whatever still runs and join every thread we started."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            self._stop_all(self.allocations())
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        for allocation in self._all_allocations():
            for runner in allocation.tasks.values():
                runner.emergency_kill()
                runner.shutdown(timeout=2.0)

    # -- nodes ----------------------------------------------------------------------------

    def client(self, node: str) -> NomadClient:
        try:
            return self._clients[node]
        except KeyError:
            raise KeyError(f"no Nomad client on node {node!r}; nodes: {list(self._clients)}"
                           ) from None

    @property
    def clients(self) -> list[NomadClient]:
        return list(self._clients.values())

    def restart_client(self, node: str, downtime: float = 0.0, graceful: bool = True) -> None:
        self.client(node).restart(downtime, graceful)

    def set_eligible(self, node: str, eligible: bool) -> None:
        self.client(node).eligible = eligible

    # -- jobs -----------------------------------------------------------------------------

    def run_job(self, job: Job, nodes: Sequence[str] | None = None) -> list[Allocation]:
        """Place `count` allocations of every group, one per node in `nodes` (default:
        eligible nodes round robin), and start them. Returns at once; use
        `Allocation.wait_running` or wait for Consul."""
        placed = []
        for group in job.groups:
            targets = self._targets(group, nodes)
            for index in range(group.count):
                placed.append(self.client(targets[index]).place(job, group.name, index))
        return placed

    def allocations(self, job_id: str | None = None, node: str | None = None
                    ) -> list[Allocation]:
        """Live allocations (desired status run), optionally of one job or one node."""
        return [a for client in self._clients.values() if node in (None, client.name)
                for a in client.live_allocations() if job_id in (None, a.job.id)]

    def stop_job(self, job_id: str) -> None:
        """`nomad job stop`: every allocation stopped at once, each in Nomad's order."""
        self._stop_all(self.allocations(job_id))

    def drain(self, node: str, deadline: float = DRAIN_DEADLINE, replace: bool = True
              ) -> list[Allocation]:
        """`nomad node drain -enable`: the node becomes ineligible; per group, as many
        allocations are stopped as keep `count - migrate.max_parallel` healthy ones
        (watch_jobs.go handleTaskGroup), each replaced on another eligible node when
        `replace`; at the deadline the rest are stopped at once. Returns the
        replacements."""
        draining = self.client(node)
        draining.eligible = False
        end = time.monotonic() + deadline
        replacements: list[Allocation] = []
        stoppers: list[threading.Thread] = []
        migrating: set[str] = set()
        try:
            while draining.live_allocations() or any(t.is_alive() for t in stoppers):
                remaining = [a for a in draining.live_allocations() if a.id not in migrating]
                if time.monotonic() >= end:
                    self._stop_all(remaining)
                    break
                for allocation in self._drainable(remaining, migrating):
                    migrating.add(allocation.id)
                    if replace:
                        replacements.extend(self._replace(allocation))
                    stoppers.append(self._stop_in_background(allocation))
                self._closed.wait(DRAIN_POLL)
        finally:
            for thread in stoppers:
                thread.join(60.0)
        return replacements

    # -- internals --------------------------------------------------------------------------

    def _targets(self, group: TaskGroup, nodes: Sequence[str] | None) -> list[str]:
        if nodes is not None:
            if len(nodes) < group.count:
                raise ValueError(f"group {group.name!r} needs {group.count} nodes")
            return list(nodes)
        eligible = [name for name, client in self._clients.items() if client.eligible]
        if not eligible:
            raise RuntimeError("no eligible node to place on")
        with self._lock:
            start = self._placements
            self._placements += group.count
        return [eligible[(start + i) % len(eligible)] for i in range(group.count)]

    def _drainable(self, remaining: list[Allocation], migrating: set[str]
                   ) -> Iterator[Allocation]:
        # nomad: drainer/watch_jobs.go (handleTaskGroup): numToDrain = healthy - (count -
        # max_parallel), where allocations already migrating do not count as healthy.
        groups: dict[tuple[str, str], list[Allocation]] = {}
        for allocation in remaining:
            groups.setdefault((allocation.job.id, allocation.group.name), []).append(allocation)
        for (job_id, _), candidates in groups.items():
            group = candidates[0].group
            healthy = sum(
                1 for a in self.allocations(job_id)
                if a.group.name == group.name and a.id not in migrating
                and _healthy_for(a, group.migrate.min_healthy_time))
            count = min(len(candidates), healthy - (group.count - group.migrate.max_parallel))
            yield from candidates[:max(0, count)]

    def _replace(self, allocation: Allocation) -> list[Allocation]:
        """The scheduler places a replacement (same name and index) on the eligible node
        running the fewest of that group; none when no node is eligible."""
        eligible = [c for c in self._clients.values()
                    if c.eligible and c.name != allocation.node]
        if not eligible:
            return []

        def load(client: NomadClient) -> int:
            return sum(1 for a in client.live_allocations()
                       if (a.job.id, a.group.name) == (allocation.job.id, allocation.group.name))

        target = min(eligible, key=load)
        return [target.place(allocation.job, allocation.group.name, allocation.index)]

    def _stop_all(self, allocations: list[Allocation]) -> None:
        threads = [self._stop_in_background(allocation) for allocation in allocations]
        for thread in threads:
            thread.join(120.0)

    @staticmethod
    def _stop_in_background(allocation: Allocation) -> threading.Thread:
        thread = threading.Thread(target=allocation.stop, daemon=True,
                                  name=f"stop-{allocation.id[:8]}")
        thread.start()
        return thread

    def _all_allocations(self) -> list[Allocation]:
        return [a for client in self._clients.values() for a in client.allocations.values()]


def _healthy_for(allocation: Allocation, min_healthy_time: float) -> bool:
    """The deployment health the drainer reads, approximated: healthy now, with every
    task started at least min_healthy_time ago (the tracker's timer, allochealth)."""
    if not allocation.deployment_healthy():
        return False
    started = [r.process.started for r in allocation.tasks.values() if r.process is not None]
    return bool(started) and time.monotonic() - max(started) >= min_healthy_time
