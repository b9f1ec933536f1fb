"""Pure parts of the model, without processes or HTTP."""

from __future__ import annotations

import random

import pytest

from tests.nomad_double import Check, RestartPolicy, ids
from tests.nomad_double.checks import status_of
from tests.nomad_double.registrations import parse_tagged_addresses
from tests.nomad_double.task_runner import NOT_RESTARTING, RESTART, RestartTracker


def test_MakeAllocServiceID_and_WorkloadServices_Name() -> None:
    assert ids.alloc_service_id("a1", ids.workload_name("db", "db"), "db", "db") == (
        "_nomad-task-a1-db-db-db")
    assert ids.alloc_service_id("a1", ids.workload_name("web", None), "api", "http") == (
        "_nomad-task-a1-group-web-api-http")


def test_MakeCheckID_changes_with_the_check_and_matches_nonLegacyCheckRe() -> None:
    first = ids.check_id("_nomad-task-a1-db-db-db", Check("alive", interval=1.0))
    assert ids.is_current_check_format(first) and ids.is_nomad_check(first)
    assert first != ids.check_id("_nomad-task-a1-db-db-db", Check("alive", interval=2.0))
    assert first != ids.check_id("_nomad-task-a2-db-db-db", Check("alive", interval=1.0))
    assert not ids.is_current_check_format("_nomad-check-" + "a" * 40)  # legacy SHA-1


def test_isNomadService_ignores_agents_and_foreign_ids() -> None:
    assert ids.is_nomad_service("_nomad-task-x")
    assert not ids.is_nomad_service("_nomad-client-abc")
    assert not ids.is_nomad_service("consul-leader-x")
    assert ids.maybe_connect_sidecar("_nomad-task-x-sidecar-proxy")


def test_parseTaggedAddresses_takes_the_service_port_when_none_given() -> None:
    assert parse_tagged_addresses({"lan": "10.0.0.1", "wan": "1.2.3.4:80"}, 5432) == {
        "lan": {"Address": "10.0.0.1", "Port": 5432},
        "wan": {"Address": "1.2.3.4", "Port": 80}}
    with pytest.raises(ValueError, match="not an IP address"):
        parse_tagged_addresses({"lan": "db.local"}, 5432)


def test_script_check_callback_exit_codes() -> None:
    assert [status_of(code) for code in (0, 1, 2, 127)] == [
        "passing", "warning", "critical", "critical"]


def test_RestartTracker_GetState_jitter_attempts_and_modes() -> None:
    rng = random.Random(7)
    tracker = RestartTracker(RestartPolicy(attempts=2, delay=1.0, interval=60.0), "service", rng)
    first, second = tracker.decide(1), tracker.decide(0)  # a service restarts on success too
    assert first[0] == second[0] == RESTART
    assert all(1.0 <= delay < 1.25 for _, delay in (first, second))
    assert tracker.decide(1) == (NOT_RESTARTING, 0.0)  # mode "fail" after 2 attempts

    delayed = RestartTracker(RestartPolicy(attempts=1, delay=1.0, interval=60.0,
                                           mode="delay"), "service", rng)
    delayed.decide(1)
    decision, wait = delayed.decide(1)
    assert decision == RESTART and 59.0 < wait <= 60.0  # until the interval ends
    assert RestartTracker(RestartPolicy(attempts=0), "service", rng).decide(0)[0] == (
        NOT_RESTARTING)
