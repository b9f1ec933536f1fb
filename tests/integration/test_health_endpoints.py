"""Liveness and readiness of real sidecars while the Consul servers are down.

What a restart policy sees during a Consul partition: /livez (and its alias /healthz) stays 200
on every sidecar the whole time, while /readyz turns 503 once a sidecar's lease has run out, for
the leader too, and comes back to 200 when Consul does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.harness import Group, Sidecar, wait_for
from tests.integration.conftest import TTL

pytestmark = pytest.mark.slow

SAMPLE_PERIOD = 0.1


def answers(sidecar: Sidecar) -> dict[str, int]:
    return {path: sidecar.endpoint(path) for path in ("/livez", "/healthz", "/readyz")}


def lease_ran_out(sidecar: Sidecar) -> bool:
    status: dict[str, Any] = sidecar.status()
    lease = status["lease_remaining"]
    return status["state"] == "NoSession" or (lease is not None and lease <= 0)


def test_live_throughout_a_consul_outage_ready_only_with_a_lease(group: Group,
                                                                 consul: Any) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    wait_for(lambda: all(answers(s) == {"/livez": 200, "/healthz": 200, "/readyz": 200}
                         for s in group.sidecars), 3.0, "every sidecar live and ready")

    consul.servers_down()
    try:
        not_live: list[tuple[str, dict[str, int]]] = []
        deadline = time.monotonic() + TTL + 3.0
        while not lease_ran_out(leader):
            assert time.monotonic() < deadline, "the leader's lease never ran out"
            for sidecar in group.sidecars:
                seen = answers(sidecar)
                if seen["/livez"] != 200 or seen["/healthz"] != 200:
                    not_live.append((sidecar.name, seen))
            time.sleep(SAMPLE_PERIOD)
        # The leader past its lease (stepped down, or about to): live, not ready.
        assert answers(leader) == {"/livez": 200, "/healthz": 200, "/readyz": 503}
        assert not_live == [], f"/livez or /healthz failed during the outage: {not_live[:3]}"
    finally:
        consul.servers_up()

    wait_for(lambda: all(s.endpoint("/readyz") == 200 for s in group.sidecars), TTL + 5.0,
             "every sidecar ready again once Consul is back")
