"""The adapters' small pure parts, and the local side effects (files, commands)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from consul_leader.adapters.consul.port import AgentService
from consul_leader.adapters.election.key import LockHolder, next_index
from consul_leader.adapters.hooks import HookRunner, LeaderFile
from consul_leader.adapters.observability.logs import JsonFormatter, LogfmtFormatter
from consul_leader.adapters.publishing.labels import (
    Role,
    alloc_targets,
    labelled,
    registration_body,
)


@pytest.mark.parametrize(
    ("tags", "role", "replica", "expected"),
    [
        (["v1"], Role.PRIMARY, None, ["v1", "primary"]),
        (["v1", "primary"], Role.REPLICA, None, ["v1"]),
        (["v1", "primary"], Role.REPLICA, "replica", ["v1", "replica"]),
        (["replica", "v1"], Role.PRIMARY, "replica", ["v1", "primary"]),
        (["PRIMARY", "v1"], Role.REPLICA, None, ["v1"]),  # ?tag= matching is case-insensitive
        (["primary", "primary"], Role.PRIMARY, None, ["primary"]),
        ([], Role.REPLICA, None, []),
    ],
)
def test_labels_for_each_role(tags: list[str], role: Role, replica: str | None,
                              expected: list[str]) -> None:
    assert labelled(tags, role, "primary", replica) == expected


def test_registration_body_keeps_the_definition_and_drops_read_only_fields() -> None:
    service = {
        "ID": "_nomad-task-a-db-db-db", "Service": "db", "Tags": ["v1"], "Meta": {"k": "v"},
        "Port": 5432, "Address": "10.0.0.5", "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": True, "Datacenter": "dc1", "ContentHash": "abc",
        "CreateIndex": 4, "ModifyIndex": 9,
        "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 5432},
                            "custom": {"Address": "192.0.2.1", "Port": 1}},
    }
    body = registration_body(service, ["v1", "primary"], {"k": "v", "session": "s1"})
    assert body["Name"] == "db" and body["ID"] == service["ID"]
    assert body["Tags"] == ["v1", "primary"] and body["Meta"]["session"] == "s1"
    assert body["Port"] == 5432 and body["Address"] == "10.0.0.5"
    assert body["EnableTagOverride"] is True
    for refused in ("Service", "Datacenter", "ContentHash", "CreateIndex", "ModifyIndex"):
        assert refused not in body  # register decoding is strict (§0)
    assert body["TaggedAddresses"] == {"custom": {"Address": "192.0.2.1", "Port": 1}}


@pytest.mark.parametrize(
    ("previous", "reported", "expected"),
    [(0, 5, 5), (5, 9, 9), (9, 9, 9), (9, 3, 0), (9, None, 0), (9, 0, 0)],
)
def test_blocking_index_resets_when_it_goes_backwards_or_is_bogus(
        previous: int, reported: int | None, expected: int) -> None:
    assert next_index(previous, reported) == expected


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"msg": "transition", "levelno": logging.WARNING,
                                    "levelname": "WARNING"})
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_logfmt_line_quotes_what_needs_quoting() -> None:
    line = LogfmtFormatter({"service": "db"}).format(
        _record(**{"from": "Candidate", "to": "Leader", "reason": 'acquire said "true"'}))
    assert line.startswith("time=")
    assert " level=warn msg=transition service=db from=Candidate to=Leader " in line
    assert 'reason="acquire said \\"true\\""' in line


def test_json_line_is_one_object() -> None:
    line = JsonFormatter({"service": "db"}).format(_record(session="s1"))
    fields = json.loads(line)
    assert fields["msg"] == "transition" and fields["level"] == "warn"
    assert fields["session"] == "s1" and fields["service"] == "db"


def test_leader_file_is_written_whole_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "alloc-id"
    leader_file = LeaderFile(str(path))
    leader_file.write({"session": "s1", "fencing_token": 4})
    assert json.loads(path.read_text()) == {"session": "s1", "fencing_token": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["alloc-id"]  # no temporary file left
    leader_file.remove()
    leader_file.remove()  # removing twice is fine
    assert not path.exists()


def test_a_leader_file_left_by_an_earlier_run_is_removed_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "alloc-id"
    LeaderFile(str(path)).write({"session": "s0", "fencing_token": 3})  # a killed run's
    leader_file = LeaderFile(str(path))
    assert leader_file.remove_leftover() is True
    assert not path.exists()
    assert leader_file.remove_leftover() is False
    assert LeaderFile(None).remove_leftover() is False  # no leader file configured


def test_hooks_run_in_order_with_the_role_in_their_environment(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    runner = HookRunner(timeout=5.0, on_result=lambda hook, result: results.append((hook, result)))
    out = tmp_path / "out"
    runner.submit("promote", f'echo "$CONSUL_LEADER_ROLE $CONSUL_LEADER_FENCING_TOKEN" >> {out}',
                  {"CONSUL_LEADER_ROLE": "primary", "CONSUL_LEADER_FENCING_TOKEN": "7"})
    runner.submit("demote", "exit 3", {"CONSUL_LEADER_ROLE": "replica"})
    runner.submit("demote", None, {})  # no command configured: nothing runs
    runner.drain(10.0)
    assert out.read_text() == "primary 7\n"
    assert results == [("promote", "ok"), ("demote", "failed")]


def test_a_hook_that_outlives_its_timeout_is_killed(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    runner = HookRunner(timeout=0.3, on_result=lambda hook, result: results.append((hook, result)))
    marker = tmp_path / "still-running"
    runner.submit("promote", f"sleep 5; touch {marker}", {})
    runner.drain(10.0)
    assert results == [("promote", "timeout")]
    assert not marker.exists()
    assert os.environ.get("CONSUL_LEADER_ROLE") is None


def test_alloc_targets_prefer_services_named_like_ours() -> None:
    prefix = "_nomad-task-a1-"
    services = {sid: AgentService(sid, name) for sid, name in [
        ("_nomad-task-a1-db-db-db", "db"),
        ("_nomad-task-a1-sidecar-db-consul-leader-leader", "db-consul-leader"),
        ("_nomad-task-a2-db-db-db", "db"),  # another allocation
        ("web", "web"),
    ]}
    assert alloc_targets(services, prefix, "db") == ["_nomad-task-a1-db-db-db"]
    # No service of that name: every service of the allocation, as the original sidecar did.
    assert alloc_targets(services, prefix, "consul-leader") == [
        "_nomad-task-a1-db-db-db",
        "_nomad-task-a1-sidecar-db-consul-leader-leader",
    ]


def test_the_lock_value_names_its_holder() -> None:
    holder = LockHolder(host="h1", service="db", alloc_id="a1")
    assert json.loads(holder.value("s1")) == {"session": "s1", "host": "h1", "service": "db",
                                              "alloc_id": "a1"}
