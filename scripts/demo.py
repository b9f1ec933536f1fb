"""`make demo`: three allocations of a Nomad job, each with a sidecar, elect a primary on three
stand-in nodes; then Nomad stops the primary's allocation.

Everything is real but Nomad, which is the project's model of it (tests/nomad_double): a
Consul stand-in on loopback, and on each node a modelled Nomad client that runs an allocation
of the job `db` (a prestart sidecar task `python -m consul_leader` beside the main task `db`,
whose service Nomad registers and syncs every 2 s), in Nomad's order: the sidecar starts
first, and a stop kills the main task (deregistering its service) before the sidecar gets
SIGTERM. The table shows each allocation's service as Nomad holds it and as Consul lists it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.consul_double import ConsulDouble
from tests.harness import ConsulView, NomadGroup, Sidecar, running_group, wait_for

TTL, SLEEP = "3s", "1"


def table(group: NomadGroup) -> str:
    """One row per allocation: its sidecar's state, Nomad's copy of its service, what Consul
    holds for it, and whether `health/service/db?tag=primary&passing` lists it."""
    primaries = group.passing_primary_services()
    view = ConsulView.of(group.consul)
    rows = [f"  {'alloc':<9} {'node':<4} {'sidecar':<10} {'Nomad copy':<12} "
            f"{'Consul tags':<14} {'checks':<12} listed as primary"]
    for sidecar in group.sidecars:
        consul = view.owned(group.service, sidecar.owns)
        checks = [status for service_id in consul for _, status in view.checks_of(service_id)]
        tags = ",".join(sorted({t for service in consul.values() for t in service["Tags"]}))
        passing = f"{checks.count('passing')}/{len(checks)} passing" if checks else "-"
        mark = "<== primary" if any(sidecar.owns(s) for s in primaries) else ""
        rows.append(f"  {sidecar.alloc_id[:8]:<9} {sidecar.node:<4} {state(sidecar):<10} "
                    f"{nomad_tags(group, sidecar):<12} {tags or '(none)':<14} {passing:<12} "
                    f"{mark}")
    return "\n".join(rows)


def state(sidecar: Sidecar) -> str:
    if not sidecar.running():
        return "(stopped)"
    try:
        return str(sidecar.status(timeout=0.5)["state"])
    except Exception:
        return "(no answer)"


def nomad_tags(group: NomadGroup, sidecar: Sidecar) -> str:
    stored = group.nomad.client(sidecar.node).service_client.stored_service(sidecar.service_id)
    return ",".join(sorted(stored["Tags"])) if stored is not None else "(removed)"


def labelled(group: NomadGroup) -> bool:
    return all(s.labels() & {"primary", "replica"} for s in group.sidecars)


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hold", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="consul-leader-demo-"))
    with ConsulDouble(
        nodes=("n1", "n2", "n3"), session_ttl_min=1.0, rpc_hold_timeout=0.5
    ) as consul:
        say(f"Consul stand-in: agents {', '.join(consul.node_addr(n) for n in consul.node_names)}")
        say(f"Nomad (model): job db, 3 allocations, a sidecar in each (TTL {TTL}, SLEEP {SLEEP},"
            " labels 'primary' and 'replica'); Nomad syncs its services every 2 s")
        with running_group(consul, workdir, ttl=TTL, sleep=SLEEP) as group:
            assert isinstance(group, NomadGroup)
            started = time.monotonic()
            leader = group.wait_single_primary(timeout=10.0)
            elected = time.monotonic() - started
            wait_for(lambda: labelled(group), 5.0, "labels on every allocation's service")
            say(f"\nElected: the sidecar of allocation {leader.alloc_id[:8]} on {leader.node}, "
                f"{elected:.2f}s after the job started:")
            say(table(group))
            stop_primary(group, leader)
            say(table(group))
            if args.hold:
                hold(group, workdir)
        say(f"\nAll allocations stopped. Task logs: {workdir}/nomad/<node>/alloc/<id>/alloc/logs")
    return 0


def stop_primary(group: NomadGroup, leader: Sidecar) -> None:
    """Nomad stops the primary's allocation; report when another allocation is primary."""
    say(f"\nnomad alloc stop {leader.alloc_id[:8]}: the main task first (its service "
        "deregistered), then SIGTERM to the sidecar ...")
    stopping = threading.Thread(target=group.stop, args=(leader,), daemon=True)
    stopped = time.monotonic()
    stopping.start()
    successor = group.wait_single_primary(timeout=10.0, exclude=leader)
    took = time.monotonic() - stopped
    stopping.join(30.0)
    say(f"Allocation {successor.alloc_id[:8]} on {successor.node} is primary {took:.2f}s later; "
        f"the old sidecar exited with status {leader.wait(10)}.")


def hold(group: NomadGroup, workdir: Path) -> None:
    say(f"\nRunning; Ctrl-C to stop. Task logs under {workdir}")
    try:
        while True:
            time.sleep(3)  # the refresh period of the table
            say(table(group) + "\n")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
