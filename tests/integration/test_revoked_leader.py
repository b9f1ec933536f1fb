"""A leader whose ACL token is revoked: the new leader evicts its stale instance from the catalog.

The stand-in runs with ACLs on (default deny); the sidecars are allocations of the Nomad model
with the shipped policy (`deploy/consul/consul-leader-policy.hcl`), reading their token from
secrets/consul_token. Revoking the leader's token leaves its instance listed as a passing
primary in the catalog (its role check's failure cannot sync: docs/consul-semantics-addendum.md
§11). What must hold:
* within the bound (session invalidation, up to 2 x TTL, plus the grace before the new leader
  looks up the old instance's session) and a margin, the new leader is the ONLY passing
  primary, and Consul never lists two on the way: the new leader does not wait out the bound
  it gives an instance whose session may still be alive;
* the new leader counts the eviction in its metrics and logs an error naming the instance
  and its node;
* when the old sidecar gets a new token, its instance is listed again, as a passing replica.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from consul_leader.fsm.timing import Timings
from tests.harness import NomadSidecar, Sidecar, wait_for
from tests.integration.conftest import SLEEP, TTL
from tests.integration.support import (
    POLICY_SERVICE,
    AclCluster,
    log_lines,
    running_acl_cluster,
    scanned_for_tokens,
    shipped_policy_rules,
    wait_found,
)

pytestmark = pytest.mark.slow

SIDECAR_RULES = shipped_policy_rules()
# DESIGN §6 crash bound (the old session lasts up to 2 x TTL), then the grace before the new
# leader asks Consul whether the other primary's session still exists.
BOUND = 2 * TTL + Timings(TTL, SLEEP, watch_wait=TTL).stale_primary_grace
MARGIN = 1.0
EVICTED_METRIC = "consul_leader_stale_primaries_evicted_total"


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[AclCluster]:
    with scanned_for_tokens(tmp_path) as vault, running_acl_cluster(vault, tmp_path) as cluster:
        yield cluster


def listed(cluster: AclCluster, **params: str) -> list[dict[str, object]]:
    """The catalog's answer (not the agent's view) to health/service/postgres, as clients see
    it, with the management token."""
    reply = requests.get(f"{cluster.consul.node_addr('n1')}/v1/health/service/{POLICY_SERVICE}",
                         params={"passing": "1", **params},
                         headers={"X-Consul-Token": cluster.management}, timeout=2)
    reply.raise_for_status()
    return [entry["Service"] for entry in reply.json()]


def passing_primaries(cluster: AclCluster) -> list[str]:
    return sorted(str(service["ID"]) for service in listed(cluster, tag="primary"))


def owned_by(sidecar: Sidecar, services: list[dict[str, object]]) -> list[dict[str, object]]:
    return [service for service in services if sidecar.owns(service)]


def write_token_file(path: Path, secret: str) -> None:
    staging = path.with_name(path.name + ".new")
    staging.write_text(secret + "\n")
    os.replace(staging, path)


def evicted_count(sidecar: Sidecar) -> float:
    metrics = requests.get(f"http://127.0.0.1:{sidecar.status_port}/metrics", timeout=2).text
    values = [line.split()[-1] for line in metrics.splitlines()
              if line.startswith(EVICTED_METRIC + " ")]
    return float(values[0]) if values else -1.0


def test_a_revoked_leader_is_evicted_then_comes_back_as_a_replica(
        acl_cluster: AclCluster) -> None:
    group = acl_cluster.group(SIDECAR_RULES)
    try:
        for node in ("n1", "n2"):
            group.add(node)
        old = wait_found(lambda: acl_cluster.primary(group), 5.0, "a passing primary")
        assert isinstance(old, NomadSidecar)
        new = next(s for s in group.sidecars if s is not old)
        (old_instance,) = [str(s["ID"]) for s in owned_by(old, listed(acl_cluster, tag="primary"))]
        wait_for(lambda: owned_by(new, listed(acl_cluster, tag="replica")), 5.0,
                 "the other sidecar's instance listed as a passing replica")
        most_listed = 0

        def only_new_primary() -> bool:
            nonlocal most_listed
            primaries = passing_primaries(acl_cluster)
            most_listed = max(most_listed, len(primaries))
            return [p for p in primaries if p != old_instance] == primaries != []

        acl_cluster.consul.revoke_acl_token(acl_cluster.task_token(old))
        revoked = time.monotonic()
        wait_for(only_new_primary, BOUND + MARGIN, "the new leader as the only passing primary")
        took = time.monotonic() - revoked

        assert owned_by(new, listed(acl_cluster, tag="primary")), "not the new leader's"
        assert most_listed == 1, f"{most_listed} passing primaries listed at once"
        assert evicted_count(new) == 1.0
        errors = [line for line in log_lines(new.logs(), "error") if "evicted" in line]
        assert len(errors) == 1 and old_instance in errors[0] and f"node={old.node}" in errors[0]

        token_file = old.task_runner.dirs.secrets / "consul_token"
        write_token_file(token_file, acl_cluster.token("after-revocation", SIDECAR_RULES))
        wait_for(lambda: owned_by(old, listed(acl_cluster, tag="replica")), 3 * TTL,
                 "the old instance back in the catalog as a passing replica")
        assert passing_primaries(acl_cluster) == sorted(
            str(s["ID"]) for s in owned_by(new, listed(acl_cluster, tag="primary")))
        print(f"new leader the only passing primary {took:.2f}s after the revocation "
              f"(bound {BOUND:.2f}s)")
    finally:
        group.stop_all()
