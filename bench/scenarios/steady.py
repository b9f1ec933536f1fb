"""Steady state: Consul load per instance (leader and follower) and each process's footprint.

Both kinds run side by side for the same window, each on its own stand-in with one instance
per node, so a node's request counts are one instance's requests (the stand-in classifies
each as agent-local or server-bound). The window opens one renew period after the fleets are
steady (so start-up requests are not counted) and nothing else talks to those nodes during it.
CPU is utime+stime over the window, RSS is VmRSS at its end (/proc).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.fleet import Fleet, Kind, stand_in, stop_fleets
from bench.results import Env, Results
from bench.scenarios.common import NODES, STEADY_TIMEOUT, note_exits
from tests.harness import Sidecar

MB = 1024 * 1024


@dataclass(frozen=True)
class NodeLoad:
    server: int
    agent: int
    endpoints: dict[str, int]


def node_load(stats: dict[str, Any], node: str) -> NodeLoad:
    entry = stats["nodes"][node]
    endpoints = {name: data["count"] for name, data in entry["endpoints"].items()}
    return NodeLoad(entry["server"], entry["agent"], endpoints)


def per_minute(count: float, seconds: float) -> float:
    return count * 60.0 / seconds


def load_and_footprint(env: Env, results: Results) -> None:
    with contextlib.ExitStack() as stack:
        fleets = [
            Fleet(stack.enter_context(stand_in(NODES)), kind,
                  env.workdir / f"steady-{kind.name.lower()}", env.timings)
            for kind in Kind
        ]
        try:
            for fleet in fleets:
                for node in NODES:
                    fleet.add(node)
            for fleet in fleets:
                fleet.wait_steady(STEADY_TIMEOUT)
            _measure(env, results, fleets)
        finally:
            note_exits(results, "steady", stop_fleets(fleets))


def _measure(env: Env, results: Results, fleets: list[Fleet]) -> None:
    # Warm-up of one renew period: the window must not count start-up requests.
    time.sleep(env.timings.sleep)
    leaders = {fleet.kind: fleet.primary() for fleet in fleets}
    before = {s.pid: procstat.sample(s.pid) for fleet in fleets for s in fleet.members}
    for fleet in fleets:
        fleet.consul.reset_stats()
    opened = time.monotonic()
    time.sleep(env.plan.steady_window)  # the measurement window itself
    window = time.monotonic() - opened
    for fleet in fleets:
        _record(env, results, fleet, leaders[fleet.kind], before, window)


def _record(env: Env, results: Results, fleet: Fleet, leader: Sidecar | None,
            before: dict[int, procstat.ProcSample], window: float) -> None:
    kind = fleet.kind
    stats = fleet.consul.stats()
    if leader is None or fleet.primary() is not leader:
        results.notes.append(f"steady state ({kind.value}): the leader changed during the window")
    for member in fleet.members:
        role = "leader" if member is leader else "follower"
        load = node_load(stats, member.node)
        results.figure(f"load_{role}_server", kind, "req/min").add(
            per_minute(load.server, window))
        results.figure(f"load_{role}_agent", kind, "req/min").add(per_minute(load.agent, window))
        endpoints = results.details.setdefault("endpoints_per_minute", {})
        endpoints[f"{kind.value} {role} ({member.node})"] = {
            name: round(per_minute(count, window), 2)
            for name, count in sorted(load.endpoints.items())
        }
        after = procstat.sample(member.pid)
        cpu = after.cpu_seconds - before[member.pid].cpu_seconds
        results.figure("rss", kind, "MB").add(after.rss_bytes / MB)
        results.figure("cpu_per_hour", kind, "s/h").add(cpu / window * 3600)
        results.figure("cpu_percent", kind, "%").add(cpu / window * 100)
    env.progress(f"steady state {kind.value}: {window:.0f}s window")
