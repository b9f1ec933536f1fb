"""ACL tokens end to end: where the sidecar takes its token from, rotation, and no leaks.

The stand-in runs with ACLs on (default deny); tokens carry the shipped policy's rules
(`deploy/consul/consul-leader-policy.hcl`, service `postgres`). Every secret is a distinctive
random string, and every scenario ends with a scan of all its sidecar logs for all of them.

What must hold:
* `CONSUL_HTTP_TOKEN_FILE` wins over `CONSUL_HTTP_TOKEN` (surrounding whitespace stripped).
* After a 403 the sidecar re-reads the token file: a token revoked and replaced in the file
  (what Nomad does when it rotates a workload identity token) is picked up without a restart.
  The sidecars are allocations of the Nomad model there, reading their task's
  secrets/consul_token.
* No token secret appears in any log line, /status or /metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import requests

from tests.harness import NomadSidecar, Sidecar, wait_for
from tests.integration.support import (
    AclCluster,
    SecretVault,
    log_lines,
    logs_under,
    role_endpoints_checked,
    running_acl_cluster,
    scanned_for_tokens,
    shipped_policy_rules,
    state_of,
    transitions_to,
    wait_found,
)

pytestmark = pytest.mark.slow

SIDECAR_RULES = shipped_policy_rules()
REREAD_MESSAGE = "the token in CONSUL_HTTP_TOKEN_FILE changed"


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[AclCluster]:
    with scanned_for_tokens(tmp_path) as vault, running_acl_cluster(vault, tmp_path) as cluster:
        yield cluster


def write_token_file(path: Path, secret: str) -> None:
    """Replace the file in one step, as a secrets writer should: never half a token."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(f"  {secret}\n")  # whitespace around it is stripped, as in Go
    os.replace(staging, path)


def _read_again(sidecar: Sidecar) -> bool:
    return REREAD_MESSAGE in sidecar.logs()


def served_text(sidecar: Sidecar) -> str:
    """What the sidecar shows on its status port."""
    base = f"http://127.0.0.1:{sidecar.status_port}"
    return "\n".join(requests.get(base + path, timeout=2).text for path in ("/status", "/metrics"))


def test_secret_scan_finds_a_leak(tmp_path: Path) -> None:
    """The scan every scenario ends with can fail: a log holding a secret is reported."""
    vault = SecretVault()
    secret = vault.new("probe")
    (tmp_path / "leaky.log").write_text(f"level=info msg=oops token={secret.rsplit('-', 1)[1]}\n")
    with pytest.raises(AssertionError, match="probe"):
        vault.assert_absent(logs_under(tmp_path))
    with pytest.raises(AssertionError, match="no sidecar log"), scanned_for_tokens(
        tmp_path / "empty"
    ):
        pass


# Consul alone: the test sets CONSUL_HTTP_TOKEN itself, which under Nomad the workload
# identity's hook overrides with the task's own token.
def test_token_file_wins_over_the_environment(acl_cluster: AclCluster, tmp_path: Path) -> None:
    # Known to Consul but granted nothing: used, it would be refused with 403.
    env_token = acl_cluster.token("env", [])
    token_file = tmp_path / "consul_token"
    write_token_file(token_file, acl_cluster.token("file", SIDECAR_RULES))
    group = acl_cluster.consul_only_group()
    try:
        with role_endpoints_checked(lambda: group.sidecars) as probe:
            both = group.add("n1", env={"CONSUL_HTTP_TOKEN": env_token,
                                        "CONSUL_HTTP_TOKEN_FILE": str(token_file)})
            env_only = group.add("n2", env={"CONSUL_HTTP_TOKEN": env_token})
            wait_for(lambda: acl_cluster.primary(group) is both, 5.0,
                     "the sidecar with the token file leading")
            probe.expect(both, "Leader")
            # The control: the environment token alone really is refused.
            wait_for(lambda: [line for line in log_lines(env_only.logs(), "error")
                              if "Permission denied" in line], 5.0,
                     "an error line: the environment token refused")
            assert state_of(env_only) != "Leader"
            assert transitions_to(env_only, "Leader") == 0
    finally:
        group.stop_all()
    assert " token_source=file" in both.logs()
    assert "Permission denied" not in both.logs()


def rotate(acl_cluster: AclCluster, sidecar: Sidecar) -> None:
    """Revoke the task's token and write a new one into its secrets/consul_token."""
    assert isinstance(sidecar, NomadSidecar)
    token_file = sidecar.task_runner.dirs.secrets / "consul_token"
    assert token_file.read_text().strip() == acl_cluster.task_token(sidecar)
    acl_cluster.consul.revoke_acl_token(acl_cluster.task_token(sidecar))
    write_token_file(token_file, acl_cluster.token("after-rotation", SIDECAR_RULES))


def test_rotated_token_file_is_read_again_after_a_403(acl_cluster: AclCluster) -> None:
    group = acl_cluster.group(SIDECAR_RULES)
    try:
        with role_endpoints_checked(lambda: group.sidecars) as probe:
            for node in ("n1", "n2"):
                group.add(node)
            leader = wait_found(lambda: acl_cluster.primary(group), 5.0, "a passing primary")
            follower = next(s for s in group.sidecars if s is not leader)
            probe.expect(follower, "Follower")
            session = leader.status()["session"]
            pids = [s.pid for s in group.sidecars]

            for sidecar in group.sidecars:
                rotate(acl_cluster, sidecar)
            rotated = time.monotonic()

            for sidecar in group.sidecars:
                wait_for(partial(_read_again, sidecar), 5.0,
                         f"{sidecar.name} reading the token file again")
            # Renewed with the new token, same session, same processes: nothing restarted.
            wait_for(lambda: leader.status()["last_renew_age"] < time.monotonic() - rotated,
                     5.0, "a renew confirmed after the rotation")
            probe.expect(leader, "Leader")
            probe.expect(follower, "Follower")
            assert leader.status()["session"] == session
            assert [s.pid for s in group.sidecars] == pids and all(
                s.running() for s in group.sidecars)

            # The new token does everything else too: a clean handover when Nomad stops the
            # leader's allocation (main task first, then SIGTERM to the sidecar).
            group.stop(leader)
            wait_for(lambda: acl_cluster.primary(group) is follower, 3.0, "the follower leading")
            probe.expect(follower, "Leader")
            assert leader.wait(timeout=5.0) == 0
            acl_cluster.vault.assert_absent({"follower status port": served_text(follower)})
    finally:
        group.stop_all()
    after = leader.logs().split(REREAD_MESSAGE, 1)[1]
    assert not log_lines(after, "error"), f"errors after the rotation: {after[-2000:]}"
