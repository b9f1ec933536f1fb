"""`promtool check metrics` on live scrapes of running sidecars, in every state.

Three sidecars run against the stand-in with a 10 s lock-delay. The states are reached the way
they happen in production: Leader and Follower after the election; Candidate for everyone
while the lock-delay of a destroyed leader session is in force; NoSession while the Consul
servers are down (the lease runs out and no new session can be made).

A scrape counts for a state only when /status shows that state, unchanged, before and after
it. promtool must exit 0 and print nothing: no lint finding, no parse error. Throughout, the
role-endpoint probe checks /primary and /replica against /status in each of these states.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
import requests

from tests.harness import Group, HealthObserver, Sidecar
from tests.integration.conftest import TTL
from tests.integration.support import (
    RoleEndpointProbe,
    RoleSample,
    require_binary,
    role_endpoints_checked,
    role_violations,
    state_of,
    wait_found,
)

pytestmark = pytest.mark.slow

LOCK_DELAY = 10.0  # long enough to find everyone in Candidate; the test never waits it out


def promtool_findings(exposition: bytes) -> str:
    """Everything `promtool check metrics` says about `exposition`; '' when it is clean."""
    result = subprocess.run([require_binary("promtool"), "check", "metrics"], input=exposition,
                            capture_output=True, timeout=30, check=False)
    said = (result.stdout + result.stderr).decode(errors="replace").strip()
    if result.returncode != 0 and not said:
        said = f"exit status {result.returncode}"
    return said


def scrape_in_state(sidecar: Sidecar, state: str) -> bytes | None:
    """A /metrics scrape taken while /status showed `state`, unchanged, before and after."""
    before = sidecar.status()
    reply = requests.get(f"http://127.0.0.1:{sidecar.status_port}/metrics", timeout=2)
    reply.raise_for_status()
    after = sidecar.status()
    same = (before["state"], before["since"]) == (after["state"], after["since"])
    return reply.content if same and before["state"] == state else None


def assert_lint_clean(sidecar: Sidecar, state: str, probe: RoleEndpointProbe) -> None:
    exposition = wait_found(lambda: scrape_in_state(sidecar, state), 5.0,
                          f"a scrape of {sidecar.name} in state {state}")
    assert f'consul_leader_state{{state="{state}"}} 1.0' in exposition.decode()
    assert promtool_findings(exposition) == "", f"promtool on a {state} scrape"
    probe.expect(sidecar, state)


def first_in(group: Group, state: str) -> Sidecar | None:
    return next((s for s in group.sidecars if state_of(s) == state), None)


@pytest.mark.parametrize("group", [{"lock_delay": f"{LOCK_DELAY:g}s"}], indirect=True)
def test_metrics_lint_clean_in_every_state(group: Group, consul: Any,
                                           observer: HealthObserver) -> None:
    linted: set[str] = set()
    with role_endpoints_checked(lambda: group.sidecars) as probe:
        leader = group.wait_single_primary(timeout=3.0)
        assert_lint_clean(leader, "Leader", probe)
        follower = wait_found(lambda: first_in(group, "Follower"), 3.0, "a Follower")
        assert_lint_clean(follower, "Follower", probe)
        linted |= {"Leader", "Follower"}

        # Destroying the leader's session frees the key under a lock-delay: nobody may take
        # it for LOCK_DELAY seconds, so everyone campaigns in Candidate meanwhile.
        session = leader.status()["session"]
        destroyed = time.monotonic()
        requests.put(f"{group.any_agent()}/v1/session/destroy/{session}",
                     timeout=2).raise_for_status()
        candidate = wait_found(lambda: first_in(group, "Candidate"), 3.0, "a Candidate")
        assert_lint_clean(candidate, "Candidate", probe)
        assert time.monotonic() - destroyed < LOCK_DELAY, "the lock-delay ran out: too slow"
        linted.add("Candidate")

        consul.servers_down()
        try:
            # Renewals fail, the local lease ends after TTL, and no new session can be made.
            no_session = wait_found(lambda: first_in(group, "NoSession"), TTL + 3.0,
                                  "a sidecar in NoSession while the servers are down")
            assert_lint_clean(no_session, "NoSession", probe)
            linted.add("NoSession")
        finally:
            consul.servers_up()
    assert linted == {"Leader", "Follower", "Candidate", "NoSession"}


def test_promtool_flags_a_bad_exposition() -> None:
    """The lint above can fail: promtool does report a badly named metric."""
    bad = b"# HELP x_isLeader leader\n# TYPE x_isLeader gauge\nx_isLeader 1\n"
    assert "not 'camelCase'" in promtool_findings(bad)


def test_role_probe_reports_disagreements() -> None:
    """The /primary and /replica check used in every scenario can fail."""
    wrong = [
        RoleSample("s0", "Follower", primary=200, replica=200, lease_left=2.0),
        RoleSample("s1", "Leader", primary=503, replica=503, lease_left=2.0),
        RoleSample("s2", "Candidate", primary=503, replica=200, lease_left=2.0),
        RoleSample("s3", "Follower", primary=503, replica=503, lease_left=2.0),
    ]
    assert [len(role_violations(sample, 0.2)) for sample in wrong] == [1, 1, 1, 1]
    right = [
        RoleSample("s0", "Leader", primary=200, replica=503, lease_left=2.0),
        RoleSample("s1", "Leader", primary=503, replica=503, lease_left=-0.5),  # stale leader
        RoleSample("s2", "Follower", primary=503, replica=200, lease_left=2.0),
        RoleSample("s3", "NoSession", primary=503, replica=503, lease_left=None),
    ]
    assert [role_violations(sample, 0.2) for sample in right] == [[], [], [], []]
