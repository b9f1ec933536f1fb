"""`python -m bench.switchover [--runs 20] [--json out/switchover.json]`

Issue 12's figures, with Nomad in the loop (each sidecar is the prestart sidecar task of an
allocation of the Nomad model), against the Consul stand-in, at the benchmarks' timings (TTL 3 s,
SLEEP 2, lock-delay 0 s). Prints one line per figure:

- switchover latency: `POST /switchover` sent → Consul's health view (a blocking query through
  a node that hosts no instance) first lists exactly one passing primary, another instance;
  median / p95 / max over the runs;
- `?to=`: runs in which the named instance is the new passing primary;
- priority 0: leader stopped (Nomad stops its allocation, a new one replaces it) runs in which
  the priority-0 instance became the primary (should be 0);
- priorities 3/2/1: the priority-3 leader stopped, runs in which the priority-2 instance took
  over;
- runs in which the health view listed two passing primaries at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import requests

from bench.fleet import OBSERVER_NODE, instance_nodes, stand_in
from bench.settings import Timings
from bench.stats import Summary
from bench.watch import HealthWatch, Seen
from tests.consul_double import ConsulDouble
from tests.harness import NomadGroup, Sidecar, wait_for

TOKEN = "bench-switchover-token"
SERVICE = "db"
NODES = ("n1", "n2", "n3")
HOLD_OFF = "1s"  # short, so the next run does not wait long for the old leader
BOUND = 5.0  # seconds for any one change to show: far above what is measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.switchover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="bench-switchover-") as folder:
        workdir = Path(folder)
        for name, scenario in (("switchover", switchover), ("targeted", targeted),
                               ("priority_zero", priority_zero), ("priority_order", order)):
            progress(f"{name}: {args.runs} runs")
            figures[name] = scenario(workdir / name, args.runs)
    for line in report(figures):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def progress(text: str) -> None:
    print(f"[bench.switchover] {text}", file=sys.stderr, flush=True)


# -- the fleet -----------------------------------------------------------------------------------


@contextmanager
def fleet(workdir: Path) -> Iterator[tuple[ConsulDouble, NomadGroup, HealthWatch]]:
    timings = Timings()
    token_file = workdir / "token"
    workdir.mkdir(parents=True)
    token_file.write_text(TOKEN + "\n")
    with stand_in(NODES) as consul:
        env = {"CONSUL_LEADER_HTTP_WRITES": "on",
               "CONSUL_LEADER_HTTP_TOKEN_FILE": str(token_file),
               "CONSUL_LEADER_LOG_LEVEL": "info"}
        group = NomadGroup(consul, workdir, service=SERVICE, ttl=timings.ttl_text,
                           sleep=timings.sleep_text, lock_delay=timings.lock_delay_text,
                           extra_env=env, nodes=instance_nodes(consul))
        with group, HealthWatch(consul.node_addr(OBSERVER_NODE), SERVICE) as watch:
            yield consul, group, watch


def add_members(group: NomadGroup) -> None:
    """One instance per node, all of the default priority."""
    for node in NODES:
        group.add(node)


def primary_of(group: NomadGroup, seen: Seen) -> Sidecar | None:
    (only,) = seen.primaries if len(seen.primaries) == 1 else (None,)
    return None if only is None else group.owner({"ID": only})


def steady(group: NomadGroup) -> Sidecar:
    """The one passing primary, once every other running member is a passing replica that is
    not holding off."""
    def ready() -> Sidecar | None:
        leader = group.the_primary()
        if leader is None:
            return None
        replicas = replica_ids(group)
        others = [s for s in group.sidecars if s is not leader and s.running()]
        settled = all(s.published_id in replicas and s.status()["excluded"] in (
            None, {"reason": "priority 0: this instance never leads", "remaining": None})
            for s in others)
        return leader if settled else None

    found = wait_for(ready, 4 * BOUND, "a steady fleet")
    assert found is not None
    return found


def replica_ids(group: NomadGroup) -> set[str]:
    reply = requests.get(f"{group.any_agent()}/v1/health/service/{SERVICE}",
                         params={"tag": "replica", "passing": "1"}, timeout=2)
    return {entry["Service"]["ID"] for entry in reply.json()}


def post(sidecar: Sidecar, **params: str) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{sidecar.status_port}/switchover",
                         params={"hold_off": HOLD_OFF, **params},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def other_primary(old: Sidecar) -> Callable[[frozenset[str]], bool]:
    return lambda primaries: len(primaries) == 1 and old.published_id not in primaries


def overlaps(watch: HealthWatch, since: float) -> int:
    return len(watch.overlaps(since, time.monotonic()))


# -- scenarios -----------------------------------------------------------------------------------


def switchover(workdir: Path, runs: int) -> dict[str, Any]:
    latencies: list[float] = []
    answers: list[float] = []
    failures: list[str] = []
    with fleet(workdir) as (_, group, watch):
        add_members(group)
        started = time.monotonic()
        for run in range(runs):
            leader = steady(group)
            sent = time.monotonic()
            reply = post(leader)
            answers.append(time.monotonic() - sent)
            seen = watch.wait(other_primary(leader), sent, BOUND)
            if reply.status_code != 200 or seen is None:
                failures.append(f"run {run}: {reply.status_code} {reply.text.strip()[:80]}")
                continue
            latencies.append(seen.at - sent)
        two = overlaps(watch, started)
    return {"latency": latencies, "answer": answers, "failures": failures, "overlaps": two}


def targeted(workdir: Path, runs: int) -> dict[str, Any]:
    hits, failures = 0, []
    with fleet(workdir) as (_, group, watch):
        add_members(group)
        started = time.monotonic()
        for run in range(runs):
            leader = steady(group)
            others = [s for s in group.sidecars if s is not leader]
            target = others[run % len(others)]
            sent = time.monotonic()
            reply = post(leader, to=target.alloc_id)
            seen = watch.wait(other_primary(leader), sent, BOUND)
            new = primary_of(group, seen) if seen else None
            if reply.status_code == 200 and new is target:
                hits += 1
            else:
                failures.append(f"run {run}: {reply.status_code}, new primary "
                                f"{new.name if new else None}, target {target.name}")
        two = overlaps(watch, started)
    return {"hits": hits, "failures": failures, "overlaps": two}


def priority_zero(workdir: Path, runs: int) -> dict[str, Any]:
    zero_leads, failures = 0, []
    with fleet(workdir) as (_, group, watch):
        never = group.add("n1", env={"CONSUL_LEADER_PRIORITY": "0"})
        for node in ("n2", "n3"):
            group.add(node)
        started = time.monotonic()
        for run in range(runs):
            leader = steady(group)
            stopped = time.monotonic()
            stopper = background(partial(group.stop, leader))
            seen = watch.wait(other_primary(leader), stopped, 2 * BOUND)
            new = primary_of(group, seen) if seen else None
            zero_leads += new is never
            if new is None:
                failures.append(f"run {run}: no new primary")
            stopper.join(4 * BOUND)
            group.add(leader.node)
        two = overlaps(watch, started)
    return {"zero_leads": zero_leads, "failures": failures, "overlaps": two}


def order(workdir: Path, runs: int) -> dict[str, Any]:
    second_leads, failures, two = 0, [], 0
    with fleet(workdir) as (_, group, watch):
        for run in range(runs):
            started = time.monotonic()
            first = group.add("n1", env={"CONSUL_LEADER_PRIORITY": "3"})
            wait_for(partial(leads, group, first), 4 * BOUND, "the priority-3 instance leading")
            second = group.add("n2", env={"CONSUL_LEADER_PRIORITY": "2"})
            third = group.add("n3", env={"CONSUL_LEADER_PRIORITY": "1"})
            steady(group)
            stopped = time.monotonic()
            stopper = background(partial(group.stop, first))
            seen = watch.wait(other_primary(first), stopped, 2 * BOUND)
            new = primary_of(group, seen) if seen else None
            second_leads += new is second
            if new is not second:
                failures.append(f"run {run}: {new.name if new else None} took over")
            stopper.join(4 * BOUND)
            for member in (second, third):
                group.stop(member)
            two += overlaps(watch, started)
    return {"second_leads": second_leads, "failures": failures, "overlaps": two}


def leads(group: NomadGroup, member: Sidecar) -> bool:
    return group.the_primary() is member


def background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


# -- the report ----------------------------------------------------------------------------------


def report(figures: dict[str, Any]) -> list[str]:
    runs = figures["runs"]
    lines = [f"bench.switchover: {runs} runs each, Nomad in the loop, {Timings().describe()}"]
    latency = figures["switchover"]["latency"]
    if latency:
        s = Summary.of(latency)
        lines.append(f"switchover POST -> new passing primary (s): p50 {s.median:.3f} / p95 "
                     f"{s.p95:.3f} / max {s.max:.3f} (n={s.n}; budget p95 <= 0.3)")
        a = Summary.of(figures["switchover"]["answer"])
        lines.append(f"switchover HTTP answer (s): p50 {a.median:.3f} / p95 {a.p95:.3f} / max "
                     f"{a.max:.3f}")
    lines.append(f"switchover ?to= named instance leads: {figures['targeted']['hits']} of {runs}")
    lines.append(f"priority 0 instance leads: {figures['priority_zero']['zero_leads']} of {runs} "
                 "failovers")
    lines.append(f"priorities 3/2/1, leader stopped, priority 2 leads: "
                 f"{figures['priority_order']['second_leads']} of {runs}")
    two = sum(figures[name]["overlaps"] for name in ("switchover", "targeted", "priority_zero",
                                                      "priority_order"))
    lines.append(f"answers listing two passing primaries: {two}")
    for name in ("switchover", "targeted", "priority_zero", "priority_order"):
        for failure in figures[name]["failures"]:
            lines.append(f"  {name}: {failure}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
