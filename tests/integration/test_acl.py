"""ACLs end to end: the shipped least-privilege policies are enough, and each rule counts.

The stand-in runs with ACLs on and the default policy `deny`. The sidecars are allocations
of the Nomad model: Nomad registers the `postgres` instances with service-identity tokens,
and each sidecar task gets a workload-identity token (secrets/consul_token) whose rules are
the shipped sidecar policy `deploy/consul/consul-leader-policy.hcl`, parsed with the
stand-in's parser and rendered back, whole or with one rule removed. The service is
`postgres`, the one the policy is written for, so no rule is retyped or rewritten here. The
same goes for `deploy/consul/primary-lookup-policy.hcl`, the policy of clients that look the
primary up.

What a missing sidecar rule must do: the sidecar logs an error line naming the permission in
Consul's words (`lacks permission 'key:write' on "..."`), keeps retrying, and never becomes
Leader (no /primary 200, no primary label, no lock, no transition to Leader in its metrics).
A missing lookup rule must make the documented health query come back empty.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.consul_double.acl import parse_rules
from tests.harness import Group, Sidecar, wait_for
from tests.integration.support import (
    LEASE_SERVICE,
    POLICY_PATH,
    POLICY_SERVICE,
    AclCluster,
    PolicyRule,
    RoleEndpointProbe,
    denial_lines,
    log_lines,
    render_rules,
    role_endpoints_checked,
    running_acl_cluster,
    scanned_for_tokens,
    shipped_policy_rules,
    state_of,
    transitions_to,
    wait_found,
    without,
)

pytestmark = pytest.mark.slow

LOOKUP_POLICY_PATH = POLICY_PATH.with_name("primary-lookup-policy.hcl")
SIDECAR_RULES = shipped_policy_rules(POLICY_PATH)
LOOKUP_RULES = shipped_policy_rules(LOOKUP_POLICY_PATH)
# Requests to Consul after the first denial that show the sidecar is still trying.
RETRY_REQUESTS = 2
# Retries back off to a few seconds at most (session keeper, tagger, lock watcher).
RECOVERY_TIMEOUT = 10.0


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[AclCluster]:
    with scanned_for_tokens(tmp_path) as vault, running_acl_cluster(vault, tmp_path) as cluster:
        yield cluster


def health_query(cluster: AclCluster, group: Group, token: str) -> list[Sidecar | None]:
    """The sidecars of the instances the documented query lists with `token`."""
    reply = requests.get(
        f"{cluster.consul.node_addr('n1')}/v1/health/service/{POLICY_SERVICE}",
        params={"tag": "primary", "passing": "1"},
        headers={"X-Consul-Token": token},
        timeout=2,
    )
    reply.raise_for_status()
    return [group.owner(entry["Service"]) for entry in reply.json()]


@pytest.mark.parametrize("path", [POLICY_PATH, LOOKUP_POLICY_PATH], ids=lambda p: p.name)
def test_policy_renders_back_to_the_shipped_rules(path: Path) -> None:
    """The derived policies below are only as good as this round trip."""
    rules = shipped_policy_rules(path)
    assert rules, f"{path} has no rules"
    assert parse_rules(render_rules(rules)) == parse_rules(path.read_text())


def test_shipped_policy_elects_and_hands_over(acl_cluster: AclCluster) -> None:
    lookup = acl_cluster.token("lookup", LOOKUP_RULES)
    group = acl_cluster.group(SIDECAR_RULES)
    try:
        with role_endpoints_checked(lambda: group.sidecars) as probe:
            for node in ("n1", "n2"):
                group.add(node)
            old = wait_found(lambda: acl_cluster.primary(group), 5.0, "a passing primary")
            view = acl_cluster.view()
            assert view.holder(group.kv_path) == old.status()["session"]
            follower = next(s for s in group.sidecars if s is not old)
            wait_for(lambda: acl_cluster.labelled(group, "replica") == [follower], 2.0,
                     "the replica label on the follower")
            assert health_query(acl_cluster, group, lookup) == [old]
            probe.expect(old, "Leader")
            probe.expect(follower, "Follower")

            old.send(signal.SIGTERM)
            wait_for(lambda: acl_cluster.primary(group) is follower, 3.0,
                     "the follower taking over")
            assert old.wait(timeout=5.0) == 0
            probe.expect(follower, "Leader")
    finally:
        group.stop_all()
    view = acl_cluster.view()
    assert not view.services(LEASE_SERVICE), "lease services left after a clean shutdown"
    assert not view.session_ids(), "sessions left after a clean shutdown"
    for sidecar in group.sidecars:
        assert not log_lines(sidecar.logs(), "error"), sidecar.logs()[-3000:]
        assert "Permission denied" not in sidecar.logs()


@dataclass(frozen=True)
class Setup:
    """How the sidecar is configured besides its token."""

    name: str
    replica_label: str | None = "replica"
    env: tuple[tuple[str, str], ...] = ()

    def uses(self, rule: PolicyRule) -> bool:
        """Whether the sidecar sends requests under `rule` at all in this setup."""
        checks_on = dict(self.env).get("CONSUL_LEADER_HEALTH_CHECK", "true") == "true"
        # The sidecar's own lease service exists only to carry the lease check.
        lease_service_rule = rule.resource == "service" and rule.covers(LEASE_SERVICE)
        return checks_on or not lease_service_rule


SETUPS = [
    Setup("replica-label"),
    # The defaults: no replica label, so no label write is needed before leading.
    Setup("default-labels", replica_label=None),
    # Nor is a check write: nothing touches the service before it would carry the label.
    Setup("no-label-no-checks", replica_label=None,
          env=(("CONSUL_LEADER_HEALTH_CHECK", "false"),)),
]


@pytest.mark.parametrize(
    ("setup", "missing"),
    [
        pytest.param(setup, rule, id=f"{setup.name}-{rule.label}")
        for setup in SETUPS
        for rule in SIDECAR_RULES
        if setup.uses(rule)
    ],
)
def test_each_sidecar_rule_is_needed(acl_cluster: AclCluster, missing: PolicyRule,
                                     setup: Setup) -> None:
    group = acl_cluster.group(without(SIDECAR_RULES, missing),
                              replica_label=setup.replica_label)
    try:
        with role_endpoints_checked(lambda: group.sidecars) as probe:
            sidecar = group.add("n1", env=dict(setup.env))
            token = acl_cluster.task_token(sidecar)
            wait_for(lambda: denial_lines(sidecar.logs(), missing), 8.0,
                     f"a log line saying it lacks permission '{missing.resource}:<access>' "
                     f'on "{missing.name}..."')
            kept_trying = acl_cluster.consul.request_count(node="n1") + RETRY_REQUESTS
            wait_for(lambda: acl_cluster.consul.request_count(node="n1") >= kept_trying, 8.0,
                     "the sidecar trying again")
            assert_never_led(acl_cluster, group, sidecar, probe)
            if missing.resource == "session":
                assert not acl_cluster.view().session_ids(), "a session without session:write"
            denied = denial_lines(sidecar.logs(), missing)
            assert denial_lines(sidecar.logs(), missing, level="error"), (
                f"the denial is logged, but not at level error: {denied[0]}"
            )

            # The operator fixes the policy: the same workload-identity token now has every
            # rule (its binding rule's policy updated; Nomad keeps the token).
            acl_cluster.consul.add_acl_token(token, render_rules(SIDECAR_RULES))
            wait_for(lambda: acl_cluster.primary(group) is sidecar, RECOVERY_TIMEOUT,
                     "the sidecar leading once the rule is granted, without a restart")
            probe.expect(sidecar, "Leader")
    finally:
        group.stop_all()


def assert_never_led(cluster: AclCluster, group: Group, sidecar: Sidecar,
                     probe: RoleEndpointProbe) -> None:
    probe.sample(sidecar)
    assert "Leader" not in probe.states_seen()
    assert state_of(sidecar) != "Leader"
    assert sidecar.endpoint("/primary") == 503
    assert transitions_to(sidecar, "Leader") == 0, "it was Leader at some point"
    view = cluster.view()
    assert view.holder(group.kv_path) is None, "it holds the lock"
    assert cluster.labelled(group, "primary") == [], "it carries the primary label"


def test_each_lookup_rule_is_needed(acl_cluster: AclCluster) -> None:
    """The lookup policy finds the primary; without any one of its rules the answer is empty
    (Consul filters health answers silently, so emptiness is the whole symptom)."""
    group = acl_cluster.group(SIDECAR_RULES)
    try:
        with role_endpoints_checked(lambda: group.sidecars) as probe:
            sidecar = group.add("n1")
            wait_for(lambda: acl_cluster.primary(group) is sidecar, 5.0, "a passing primary")
            probe.expect(sidecar, "Leader")
            full = acl_cluster.token("lookup", LOOKUP_RULES)
            assert health_query(acl_cluster, group, full) == [sidecar]
            for missing in LOOKUP_RULES:
                partial = acl_cluster.token("lookup-partial", without(LOOKUP_RULES, missing))
                assert health_query(acl_cluster, group, partial) == [], (
                    f"the lookup works without {missing.label}: the rule is not needed"
                )
    finally:
        group.stop_all()
