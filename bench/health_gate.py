"""`python -m bench.health_gate [--runs N] [--only FAULT ...]`: the health gate's failovers.

With CONSUL_LEADER_HEALTH_GATE=true, three sidecars run as allocations of the Nomad model on
the Consul stand-in (TTL 3 s, SLEEP 1, lock-delay 0 s; the application's script check runs
every second). Each run makes the leader's instance critical one way, measures when Consul's
health view lists another passing primary, checks that the critical instance never leads
while critical, makes it healthy again and checks that it comes back as a follower with the
new leader left in place. Faults:

* `app-critical`: the leader's application check goes critical (Nomad's script check);
* `node-maintenance`: `PUT /v1/agent/maintenance?enable=true` on the leader's node;
* `service-maintenance`: `PUT /v1/agent/service/maintenance/<target>` on the leader's task
  service.

Figures per fault, over the runs (median / p95 / max): from the fault to the new passing
primary, and from the moment Consul's catalog stored the critical check (the stand-in's
journal) to it, which is what "within the check's critical delay + 1 s" bounds; how long the
old leader still said Leader once the new primary was listed (it learns that Consul ended its
session a round trip later; sampled, so an upper bound); and from the end of the fault until
the instance is a follower again. The integration tests (tests/integration/test_health_gate.py)
run the same steps once each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.stats import Summary
from tests.consul_double import ConsulDouble
from tests.harness import Group, NomadSidecar, Sidecar, running_group, wait_for

TTL, SLEEP = 3.0, 1.0
GATED = {"CONSUL_LEADER_HEALTH_GATE": "true"}
NODES = ("n1", "n2", "n3")
# Generous: the machine is shared; a slow run is measured, not cut off.
STEP_TIMEOUT = 4 * TTL + 5.0
# How long the instances must keep their roles once the critical one is healthy again.
SETTLE_WINDOW = 2 * TTL
# Consul re-reads a local alias check's state a minute after its last evaluation, and that
# is when it notices node maintenance has ended (addendum §14.4): one minute beside a 15 s
# TTL, scaled like the TTL here.
ALIAS_REFRESH = 60.0 * TTL / 15.0
SAMPLE_PERIOD = 0.05  # how often a condition that must hold is sampled


def put(url: str) -> None:
    reply = requests.put(url, timeout=5)
    reply.raise_for_status()


def _set_app(health: str) -> Callable[[Group, Sidecar], None]:
    def apply(group: Group, sidecar: Sidecar) -> None:
        assert isinstance(sidecar, NomadSidecar) and sidecar.allocation is not None
        sidecar.allocation.set_health(health)

    return apply


def _node_maintenance(enable: bool) -> Callable[[Group, Sidecar], None]:
    return lambda group, sidecar: put(
        f"{sidecar.agent}/v1/agent/maintenance?enable={str(enable).lower()}&reason=bench")


def _service_maintenance(enable: bool) -> Callable[[Group, Sidecar], None]:
    return lambda group, sidecar: put(
        f"{sidecar.agent}/v1/agent/service/maintenance/{sidecar.service_id}"
        f"?enable={str(enable).lower()}")


@dataclass(frozen=True)
class Fault:
    name: str
    start: Callable[[Group, Sidecar], None]
    end: Callable[[Group, Sidecar], None]
    # Is this journal event the catalog storing the fault's critical check?
    critical: Callable[[dict[str, Any], Sidecar], bool]


FAULTS: dict[str, Fault] = {
    "app-critical": Fault(
        "app-critical", _set_app("unhealthy"), _set_app("healthy"),
        lambda e, s: e["node"] == s.node and e["id"].startswith("_nomad-check-")),
    "node-maintenance": Fault(
        "node-maintenance", _node_maintenance(True), _node_maintenance(False),
        lambda e, s: e["node"] == s.node and e["id"] == "_node_maintenance"),
    "service-maintenance": Fault(
        "service-maintenance", _service_maintenance(True), _service_maintenance(False),
        lambda e, s: e["node"] == s.node and e["id"] == f"_service_maintenance:{s.service_id}"),
}


@dataclass
class Run:
    """One run's figures (seconds) and what was observed."""

    after_fault: float
    after_critical: float
    rejoined: float  # from the end of the fault to the instance being a follower again
    # How long the old leader still said Leader once Consul listed the new one (at most).
    old_leader_lag: float


def one_run(group: Group, fault: Fault) -> Run:
    """Make the leader critical, measure the failover, make it healthy again. Raises
    AssertionError when the critical instance leads again, or the new leader does not stay."""
    leader = group.wait_single_primary(STEP_TIMEOUT)
    began = time.monotonic()
    fault.start(group, leader)
    new = group.wait_single_primary(STEP_TIMEOUT, exclude=leader)
    seen = time.monotonic()
    critical_at = _critical_at(group, fault, leader, since=began)
    # When Consul ends its session (the alias check), the old leader learns it a round trip
    # later, from its lock watch or its health watch: measured, then never again.
    wait_for(lambda: leader.status()["state"] != "Leader", STEP_TIMEOUT,
             f"{leader.name} to step down")
    lag = time.monotonic() - seen

    def old_one_is(state: str, gate: str) -> bool:
        status = leader.status()
        assert status["state"] != "Leader", f"{leader.name} leads again: {status}"
        return bool(status["state"] == state and status["health_gate"] == gate)

    wait_for(lambda: old_one_is("NoSession", "critical"), STEP_TIMEOUT,
             f"{leader.name} out of the election")
    hold(lambda: group.the_primary() is new and old_one_is("NoSession", "critical"),
         SETTLE_WINDOW / 2, "the new primary stays while the old one is critical", group)
    fault.end(group, leader)
    ended = time.monotonic()
    wait_for(lambda: old_one_is("Follower", "healthy"), ALIAS_REFRESH + STEP_TIMEOUT,
             f"{leader.name} back as a follower")
    rejoined = time.monotonic() - ended
    hold(lambda: group.the_primary() is new and old_one_is("Follower", "healthy"),
         SETTLE_WINDOW, "no flapping: the new primary stays, the old one follows", group)
    return Run(seen - began, seen - critical_at, rejoined, lag)


def _critical_at(group: Group, fault: Fault, leader: Sidecar, since: float) -> float:
    def found() -> float | None:
        for event in group.consul.events(since_mono=since, kind="check_status"):
            if event["new"] == "critical" and fault.critical(event, leader):
                return float(event["mono"])
        return None

    at = wait_for(found, STEP_TIMEOUT, "the critical check in Consul's journal")
    assert at is not None
    return at


def hold(condition: Callable[[], bool], seconds: float, what: str, group: Group) -> None:
    """`condition` holds at every sample for `seconds`, or the run fails naming `what`. A
    sample whose answer was lost is taken again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            holds = condition()
        except (requests.RequestException, ValueError, KeyError):
            continue
        if not holds:
            raise AssertionError(f"{what}: Consul shows {group.describe()}")
        time.sleep(SAMPLE_PERIOD)


@contextmanager
def gated_group(workdir: Path) -> Iterator[Group]:
    """Three gated sidecars as Nomad allocations on a fresh stand-in, one primary elected."""
    with ConsulDouble(nodes=NODES, session_ttl_min=1.0, rpc_hold_timeout=0.5,
                      alias_refresh_interval=ALIAS_REFRESH) as consul, \
            running_group(consul, workdir, ttl=f"{TTL:g}s", sleep=f"{SLEEP:g}",
                          extra_env=GATED) as group:
        group.wait_single_primary(STEP_TIMEOUT)
        yield group


def measure(fault: Fault, runs: int, workdir: Path) -> list[Run]:
    results: list[Run] = []
    with gated_group(workdir / fault.name) as group:
        for run in range(runs):
            results.append(one_run(group, fault))
            last = results[-1]
            say(f"{fault.name} run {run + 1}/{runs}: {last.after_fault:.3f} s after the "
                f"fault, {last.after_critical:.3f} s after the check went critical; follower "
                f"again {last.rejoined:.3f} s after the fault ended")
    return results


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def summary_line(what: str, samples: list[float]) -> str:
    s = Summary.of(samples)
    return (f"{what:<56} p50 {s.median:.3f}  p95 {s.p95:.3f}  max {s.max:.3f}  "
            f"(n={s.n})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.health_gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per fault (default 10)")
    parser.add_argument("--only", nargs="+", choices=sorted(FAULTS), default=list(FAULTS))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="consul-leader-health-gate-") as workdir:
        measured = {name: measure(FAULTS[name], args.runs, Path(workdir)) for name in args.only}
    print(f"health gate failovers: TTL {TTL:g}s, SLEEP {SLEEP:g}, lock-delay 0s, script check "
          f"every {SLEEP:g}s, Nomad model in the loop (seconds)")
    for name, runs in measured.items():
        print(summary_line(f"{name}: fault -> new passing primary",
                           [r.after_fault for r in runs]))
        print(summary_line(f"{name}: check critical -> new passing primary",
                           [r.after_critical for r in runs]))
        print(summary_line(f"{name}: fault over -> follower again",
                           [r.rejoined for r in runs]))
        print(summary_line(f"{name}: old leader still Leader after the new one is listed",
                           [r.old_leader_lag for r in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
