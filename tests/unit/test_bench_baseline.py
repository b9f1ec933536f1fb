"""The benchmarks' baseline does what the original shell sidecar does, request for request.

`bench.baseline.ShellLoop` runs in-process against the Consul stand-in (real HTTP on
loopback) with a recording of every request it makes; the stand-in's own request counts
confirm the recording. Sleeping is injected, so nothing here waits on a clock.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.baseline import Call, ShellExit, ShellLoop, ShellSettings
from tests.consul_double import ConsulDouble
from tests.harness import REPO, nomad_service_id, register_like_nomad, wait_for

KEY = "consul-leader/db/lock"
SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# The script's requests, as `step()` spells them.
CHECK_KEY = f"GET /v1/kv/{KEY}"
READ_OWNER = f"GET /v1/kv/{KEY} ?consistent"
ACQUIRE = f"PUT /v1/kv/{KEY} ?acquire"
CREATE = "PUT /v1/session/create"
RENEW = "PUT /v1/session/renew/:id"
SERVICES = "GET /v1/agent/services ?filter"
REGISTER = "PUT /v1/agent/service/register"

BOOT_AS_LEADER = [CHECK_KEY, CREATE, SERVICES, REGISTER, ACQUIRE, SERVICES, REGISTER]
BOOT_AS_FOLLOWER = [CHECK_KEY, CREATE, SERVICES, REGISTER, ACQUIRE]
QUIET_ITERATION = [RENEW, READ_OWNER, SERVICES, SERVICES]  # labels already right


class Recorded:
    """One shell loop beside one Nomad-like service, with its requests and sleeps recorded."""

    def __init__(self, consul: ConsulDouble, node: str, workdir: Path) -> None:
        self.alloc_id = str(uuid.uuid4())
        self.service_id = nomad_service_id(self.alloc_id, "db", "db")
        self.agent = consul.node_addr(node)
        register_like_nomad(self.agent, self.service_id, "db", 5432)
        self.alloc_dir = workdir / self.alloc_id
        self.alloc_dir.mkdir()
        self.calls: list[Call] = []
        self.sleeps: list[float] = []
        settings = ShellSettings.from_env({
            "CONSUL_HTTP_ADDR": self.agent,
            "CONSUL_LEADER_SERVICE_NAME": "db",
            "CONSUL_LEADER_REPLICA_LABEL": "replica",
            "CONSUL_LEADER_TTL": "3s",
            "CONSUL_LEADER_SLEEP": "2",
            "NOMAD_ALLOC_ID": self.alloc_id,
            "NOMAD_ALLOC_DIR": str(self.alloc_dir),
        })
        self.loop = ShellLoop(settings, sleep=self.sleeps.append, on_call=self.calls.append)

    def steps(self) -> list[str]:
        """The requests made since the last call, then forget them."""
        made = [step(call) for call in self.calls]
        self.calls.clear()
        return made

    def tags(self) -> list[str]:
        reply = requests.get(f"{self.agent}/v1/agent/service/{self.service_id}", timeout=2)
        return list(reply.json()["Tags"])

    def meta(self) -> dict[str, str]:
        reply = requests.get(f"{self.agent}/v1/agent/service/{self.service_id}", timeout=2)
        return dict(reply.json()["Meta"])


def step(call: Call) -> str:
    path = SESSION_ID.sub(":id", call.path)
    names = ",".join(name for name, _ in call.params)
    return f"{call.method} {path}" + (f" ?{names}" if names else "")


def holder(consul: ConsulDouble) -> str | None:
    for entry in consul.snapshot()["kv"]:
        if entry["Key"] == KEY:
            return entry.get("Session") or None
    return None


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    # No hold: while the servers are down, server-bound calls answer 500 at once.
    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0, rpc_hold_timeout=0.0) as double:
        yield double


def test_first_instance_takes_the_key_and_labels_itself(consul: ConsulDouble,
                                                        tmp_path: Path) -> None:
    first = Recorded(consul, "n1", tmp_path)
    consul.reset_stats()  # the Nomad-like registration is not the loop's
    first.loop.boot()
    # The key is only checked, never created: the acquire creates it.
    assert first.steps() == BOOT_AS_LEADER
    # Every recorded request reached the stand-in, on the instance's own agent.
    assert consul.request_count("n1", "PUT /v1/agent/service/register") == 2
    assert consul.request_count("n1", klass="server") == 3  # check, create, acquire
    assert consul.request_count("n1", klass="agent") == 4
    assert consul.request_count("n2") == 0
    assert holder(consul) == first.loop.session
    assert "primary" in first.tags()
    assert first.meta()["session"] == first.loop.session
    assert (first.alloc_dir / first.alloc_id).exists(), "the leader file is touched"


def test_loop_renews_reads_with_consistent_and_rereads_the_service_every_sleep(
    consul: ConsulDouble, tmp_path: Path
) -> None:
    first = Recorded(consul, "n1", tmp_path)
    first.loop.run(iterations=3)
    steps = first.steps()
    assert steps[: len(BOOT_AS_LEADER)] == BOOT_AS_LEADER
    # The first pass drops the replica label it never had (no write); later passes only read.
    assert steps[len(BOOT_AS_LEADER):] == QUIET_ITERATION * 3
    assert first.sleeps == [2.0, 2.0, 2.0], "sleeps SLEEP seconds after each pass"
    assert consul.request_count("n1", "PUT /v1/session/renew/:id") == 3
    assert consul.request_count("n1", "GET /v1/kv/:key") == 1 + 3


def test_follower_labels_itself_replica_and_polls(consul: ConsulDouble, tmp_path: Path) -> None:
    leader = Recorded(consul, "n1", tmp_path)
    leader.loop.boot()
    follower = Recorded(consul, "n2", tmp_path)
    follower.loop.boot()
    assert follower.steps() == BOOT_AS_FOLLOWER
    follower.loop.iteration()
    assert follower.steps() == [RENEW, READ_OWNER, SERVICES, SERVICES, REGISTER]
    assert follower.tags() == ["replica", "v1"], "jq's unique sorts the tags"
    follower.loop.iteration()
    assert follower.steps() == QUIET_ITERATION
    assert holder(consul) == leader.loop.session


def test_takeover_happens_at_the_next_poll_after_the_session_is_gone(
    consul: ConsulDouble, tmp_path: Path
) -> None:
    leader = Recorded(consul, "n1", tmp_path)
    leader.loop.boot()
    follower = Recorded(consul, "n2", tmp_path)
    follower.loop.run(iterations=1)
    follower.steps()
    # What Consul does when the leader's session expires (no release on SIGTERM).
    requests.put(f"{leader.agent}/v1/session/destroy/{leader.loop.session}",
                 timeout=2).raise_for_status()
    follower.loop.iteration()
    assert follower.steps() == [
        RENEW, READ_OWNER, SERVICES, SERVICES,  # no holder: not us, so primary off, replica on
        CHECK_KEY, ACQUIRE, SERVICES, REGISTER,  # then check the key, acquire, label primary
    ]
    assert holder(consul) == follower.loop.session
    assert follower.tags() == ["primary", "replica", "v1"], "replica goes only at the next pass"
    follower.loop.iteration()
    assert follower.steps() == [RENEW, READ_OWNER, SERVICES, SERVICES, REGISTER]
    assert follower.tags() == ["primary", "v1"]


def test_a_lost_session_is_created_again_after_a_404_renew(consul: ConsulDouble,
                                                           tmp_path: Path) -> None:
    first = Recorded(consul, "n1", tmp_path)
    first.loop.boot()
    old = first.loop.session
    requests.put(f"{first.agent}/v1/session/destroy/{old}", timeout=2).raise_for_status()
    first.steps()
    first.loop.iteration()
    assert first.steps()[:5] == [RENEW, CREATE, SERVICES, REGISTER, READ_OWNER]
    assert first.loop.session != old
    assert first.meta()["session"] == first.loop.session


def test_an_answer_jq_cannot_parse_ends_the_loop(consul: ConsulDouble, tmp_path: Path) -> None:
    first = Recorded(consul, "n1", tmp_path)
    first.loop.boot()
    first.steps()
    consul.servers_down()
    with pytest.raises(ShellExit) as ended:
        first.loop.iteration()
    assert ended.value.status == 4, "set -e exits with jq's status"
    # The failed renew (500) is ignored; the 500 of the owner read is what ends it.
    assert first.steps() == [RENEW, READ_OWNER]
    assert "primary" in first.tags(), "it never steps down"


def test_sigterm_releases_nothing(consul: ConsulDouble, tmp_path: Path) -> None:
    """As a process (`python -m bench.baseline`), SIGTERM just ends it: the key stays held by
    a session that still exists, and the primary label stays."""
    first = Recorded(consul, "n1", tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "CONSUL_HTTP_ADDR": first.agent,
        "CONSUL_LEADER_SERVICE_NAME": "db",
        "CONSUL_LEADER_TTL": "3s",
        "CONSUL_LEADER_SLEEP": "2",
        "NOMAD_ALLOC_ID": first.alloc_id,
        "NOMAD_ALLOC_DIR": str(first.alloc_dir),
        "BENCH_BASELINE_LIFETIME": "60",
    }
    process = subprocess.Popen([sys.executable, "-m", "bench.baseline"], env=env, cwd=REPO)
    try:
        session = wait_for(lambda: holder(consul), 10.0, "the process to take the key")
        wait_for(lambda: "primary" in first.tags(), 5.0, "the primary label")
        process.send_signal(signal.SIGTERM)
        assert process.wait(5) == -signal.SIGTERM, "no handler: the default action ends it"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert holder(consul) == session
    assert session in {s["ID"] for s in consul.snapshot()["sessions"]}
    assert "primary" in first.tags()


def test_knobs_and_defaults_are_the_scripts() -> None:
    defaults = ShellSettings.from_env({})
    assert (defaults.address, defaults.key, defaults.ttl, defaults.sleep, defaults.lock_delay) \
        == ("http://localhost:8500", "/consul-leader/lock", "15s", 10.0, "0s")
    assert (defaults.primary_label, defaults.replica_label) == ("primary", "")
    named = ShellSettings.from_env({"CONSUL_LEADER_SERVICE_NAME": "db",
                                    "CONSUL_LEADER_TTL": ""})
    assert (named.key, named.ttl) == ("/consul-leader/db/lock", "15s")
    explicit = ShellSettings.from_env({"CONSUL_LEADER_KEY": "/x/y"})
    assert explicit.key == "/x/y"
