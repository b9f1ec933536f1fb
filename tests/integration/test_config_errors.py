"""Bad configuration: exit status 2, one line naming the variable, nothing sent to Consul."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.consul_double import ConsulDouble
from tests.harness import REPO, request_count

TOKEN = "s3cr3t-token-value"

CASES = {
    "malformed duration": ({"CONSUL_LEADER_TTL": "fifteen"}, "CONSUL_LEADER_TTL"),
    "TTL without unit": ({"CONSUL_LEADER_TTL": "15"}, "CONSUL_LEADER_TTL"),
    "TTL not above SLEEP": (
        {"CONSUL_LEADER_TTL": "5s", "CONSUL_LEADER_SLEEP": "5"},
        "CONSUL_LEADER_SLEEP",
    ),
    "SLEEP not a number": ({"CONSUL_LEADER_SLEEP": "often"}, "CONSUL_LEADER_SLEEP"),
    "lock-delay above 60s": ({"CONSUL_LEADER_LOCKDELAY": "61s"}, "CONSUL_LEADER_LOCKDELAY"),
    "unknown log level": ({"CONSUL_LEADER_LOG_LEVEL": "loud"}, "CONSUL_LEADER_LOG_LEVEL"),
    "unknown log format": ({"CONSUL_LEADER_LOG_FORMAT": "xml"}, "CONSUL_LEADER_LOG_FORMAT"),
    "bad URL scheme": ({"CONSUL_HTTP_ADDR": "ftp://127.0.0.1:8500"}, "CONSUL_HTTP_ADDR"),
    "missing CA file": ({"CONSUL_CACERT": "/nonexistent/ca.pem"}, "CONSUL_CACERT"),
    "CA path not a folder": ({"CONSUL_CAPATH": "/nonexistent/certs"}, "CONSUL_CAPATH"),
    "cert without key": ({"CONSUL_CLIENT_CERT": "/etc/hostname"}, "CONSUL_CLIENT_KEY"),
    "unreadable token file": (
        {"CONSUL_HTTP_TOKEN_FILE": "/nonexistent/token", "CONSUL_HTTP_TOKEN": TOKEN},
        "CONSUL_HTTP_TOKEN_FILE",
    ),
    "bad SSL bool": ({"CONSUL_HTTP_SSL": "maybe"}, "CONSUL_HTTP_SSL"),
    "bad SSL verify bool": ({"CONSUL_HTTP_SSL_VERIFY": "nah"}, "CONSUL_HTTP_SSL_VERIFY"),
    "empty primary label": ({"CONSUL_LEADER_PRIMARY_LABEL": ""}, "CONSUL_LEADER_PRIMARY_LABEL"),
    "replica equals primary": (
        {"CONSUL_LEADER_REPLICA_LABEL": "primary"},
        "CONSUL_LEADER_REPLICA_LABEL",
    ),
    "bad listen address": ({"CONSUL_LEADER_LISTEN": "here"}, "CONSUL_LEADER_LISTEN"),
    "bad hook timeout": ({"CONSUL_LEADER_HOOK_TIMEOUT": "-1s"}, "CONSUL_LEADER_HOOK_TIMEOUT"),
    "bad health-check bool": ({"CONSUL_LEADER_HEALTH_CHECK": "sure"}, "CONSUL_LEADER_HEALTH_CHECK"),
    "watch wait above 10m": ({"CONSUL_LEADER_WATCH_WAIT": "11m"}, "CONSUL_LEADER_WATCH_WAIT"),
    "health gate in the labels mode": (
        {"CONSUL_LEADER_HEALTH_GATE": "true", "CONSUL_LEADER_PUBLISH": "labels"},
        "CONSUL_LEADER_HEALTH_GATE",
    ),
    "leader file in a missing folder": (
        {"CONSUL_LEADER_LEADER_FILE": "/nonexistent/dir/leader"},
        "CONSUL_LEADER_LEADER_FILE",
    ),
}


@pytest.fixture(scope="module")
def consul() -> ConsulDouble:
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0, rpc_hold_timeout=0.5) as double:
        yield double


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_configuration_exits_2_with_one_line(
    case: str, consul: ConsulDouble, tmp_path: Path
) -> None:
    overrides, variable = CASES[case]
    consul.reset_stats()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CONSUL_HTTP_ADDR": consul.node_addr("n1"),
        "CONSUL_LEADER_SERVICE_IDS": "db-1",
        "CONSUL_LEADER_LISTEN": "127.0.0.1:0",
        **overrides,
    }
    done = subprocess.run(
        [sys.executable, "-m", "consul_leader"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {done.stderr}"
    assert variable in lines[0]
    assert "Traceback" not in done.stderr
    assert TOKEN not in done.stderr + done.stdout
    assert request_count(consul) == 0, "a configuration error must not reach Consul"


def test_help_lists_every_variable_with_its_default() -> None:
    from consul_leader.adapters.config import VARIABLES

    done = subprocess.run(
        [sys.executable, "-m", "consul_leader", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0
    for variable in VARIABLES:
        assert variable.name in done.stdout
    assert "CONSUL_LEADER_TTL" in done.stdout and "15s" in done.stdout
