"""`make demo`: three sidecars on three stand-in nodes elect a primary; then the primary stops.

Everything is real: a Consul stand-in on loopback, three `consul-leader` processes beside
three services registered the way Nomad registers them, and a real SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.consul_double import ConsulDouble
from tests.harness import Group, running_group, wait_for


def table(group: Group) -> str:
    rows = [f"  {'sidecar':<8} {'node':<5} {'state':<10} {'tags':<22} passing primary"]
    primaries = set(group.passing_primaries())
    for sidecar in group.sidecars:
        try:
            state = sidecar.status(timeout=0.5)["state"] if sidecar.running() else "(stopped)"
        except Exception:
            state = "(no answer)"
        try:
            tags = ",".join(sidecar.published_service()["Tags"])
        except Exception:
            tags = "(withdrawn)"
        mark = "<== primary" if sidecar.published_id in primaries else ""
        rows.append(f"  {sidecar.name:<8} {sidecar.node:<5} {state:<10} {tags:<22} {mark}")
    return "\n".join(rows)


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
        say("Starting three sidecars (TTL 3s, SLEEP 1, primary label 'primary', replica 'replica')")
        with running_group(consul, workdir, ttl="3s", sleep="1") as group:
            started = time.monotonic()
            leader = group.wait_single_primary(timeout=10.0)
            wait_for(
                lambda: all(
                    s.published_service()["Tags"][-1:] in (["primary"], ["replica"])
                    for s in group.sidecars
                ),
                5.0,
                "labels on every service",
            )
            say(f"\nElected {leader.name} on {leader.node} in {time.monotonic() - started:.2f}s:")
            say(table(group))
            say(f"\nSIGTERM to the primary ({leader.name}, pid {leader.pid}) ...")
            stopped = time.monotonic()
            leader.send(signal.SIGTERM)
            successor = group.wait_single_primary(timeout=10.0, exclude=leader)
            say(
                f"{successor.name} on {successor.node} is primary {time.monotonic() - stopped:.2f}s"
                f" later; {leader.name} exited with status {leader.wait(10)}."
            )
            wait_for(lambda: leader.published_id not in group.passing_primaries(), 5.0,
                     "the old primary withdrawn")
            say(table(group))
            if args.hold:
                say("\nRunning; Ctrl-C to stop. Logs in " + str(workdir))
                try:
                    while True:
                        time.sleep(3)
                        say(table(group) + "\n")
                except KeyboardInterrupt:
                    pass
        say(f"\nAll sidecars stopped. Their logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
