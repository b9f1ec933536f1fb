"""The effects hub: what each transition asks of which adapter, read from its facts alone."""

from __future__ import annotations

from typing import Any

import pytest

from consul_leader.adapters.effects import Drivers, HubSettings, RoleEffects
from consul_leader.adapters.publishing.labels import Role
from consul_leader.fsm import Event, Facts, State, Transition
from consul_leader.fsm.observation import KeyObservation
from tests.adapter_testing import TIMINGS, FakeClock

Call = tuple[str, str, tuple[Any, ...], dict[str, Any]]
NS, FO, CA, LE = State.NO_SESSION, State.FOLLOWER, State.CANDIDATE, State.LEADER


class Recorder:
    """Records every method called on it into a log shared by all drivers."""

    def __init__(self, name: str, log: list[Call], **attributes: Any) -> None:
        self._name, self._log = name, log
        self.__dict__.update(attributes)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._log.append((self._name, method, args, kwargs))


def hub(checks_enabled: bool = True) -> tuple[RoleEffects, list[Call], FakeClock]:
    log: list[Call] = []
    names = ("keeper", "acquirer", "watcher", "publisher", "checks", "leader_file", "hooks",
             "metrics")
    drivers = {name: Recorder(name, log) for name in names}
    drivers["checks"] = Recorder("checks", log, enabled=checks_enabled)
    clock = FakeClock()
    settings = HubSettings(key="/consul-leader/db/lock", timings=TIMINGS, on_promote="promote",
                           on_demote="demote")
    return RoleEffects(settings, Drivers(**drivers), clock=clock, wall_clock=lambda: 1.7e9), \
        log, clock


def t(source: State, dest: State, event: Event, **facts: Any) -> Transition:
    return Transition(source, dest, event, "test", Facts(**facts))


def calls(log: list[Call], *drivers: str) -> list[tuple[str, str]]:
    return [(d, m) for d, m, _, _ in log if not drivers or d in drivers]


Args = tuple[tuple[Any, ...], dict[str, Any]]


def args_of(log: list[Call], driver: str, method: str) -> list[Args]:
    return [(a, k) for d, m, a, k in log if (d, m) == (driver, method)]


def test_no_session_claims_nothing_and_gives_the_old_session_up() -> None:
    h, log, _ = hub()
    h.enter_no_session(t(LE, NS, Event.LEASE_EXPIRED, session="s1"))
    assert calls(log) == [("acquirer", "stand_down"), ("watcher", "follow"),
                          ("publisher", "publish"), ("keeper", "give_up")]
    assert args_of(log, "publisher", "publish") == [((Role.REPLICA, None, None), {})]
    assert args_of(log, "keeper", "give_up") == [(("s1",), {})]


def test_on_shutdown_the_session_is_kept_for_the_release_after_the_replica_role_shows() -> None:
    h, log, _ = hub()
    h.enter_no_session(t(LE, NS, Event.SHUTDOWN, session="s1"))
    assert args_of(log, "publisher", "publish") == [((Role.REPLICA, None, None), {})]
    assert ("keeper", "give_up") not in calls(log)


def test_a_candidate_publishes_the_replica_role_watches_and_campaigns() -> None:
    h, log, _ = hub()
    h.enter_candidate(t(NS, CA, Event.SESSION_CREATED, session="s1", valid_until=1003.0))
    assert args_of(log, "publisher", "publish") == [((Role.REPLICA, "s1", 1003.0), {})]
    assert args_of(log, "watcher", "follow") == [(("s1",), {})]
    assert args_of(log, "acquirer", "campaign") == [(("s1",), {})]


def test_a_leader_writes_its_file_and_runs_its_hook_at_once_and_publishes_primary() -> None:
    h, log, _ = hub()
    h.enter_leader(t(CA, LE, Event.LOCK_ACQUIRED, session="s1", fencing_token=42))
    assert calls(log) == [("metrics", "fencing_token"), ("acquirer", "stand_down"),
                          ("publisher", "publish"), ("leader_file", "write"), ("hooks", "submit")]
    assert args_of(log, "publisher", "publish") == [((Role.PRIMARY, "s1", None, 42), {})]
    (content,), _ = args_of(log, "leader_file", "write")[0]
    assert content["fencing_token"] == 42 and content["session"] == "s1"
    (name, command, env), _ = args_of(log, "hooks", "submit")[0]
    assert (name, command) == ("promote", "promote")
    assert env["CONSUL_LEADER_FENCING_TOKEN"] == "42" and env["CONSUL_LEADER_ROLE"] == "primary"
    assert h.fencing_token == 42 and not h.published


def test_leaving_leader_removes_the_file_and_runs_the_demote_hook() -> None:
    h, log, _ = hub()
    h.enter_leader(t(CA, LE, Event.LOCK_ACQUIRED, session="s1", fencing_token=42))
    h.mark_published(t(LE, LE, Event.PRIMARY_PUBLISHED, session="s1"))
    assert h.published
    log.clear()
    h.exit_leader(t(LE, FO, Event.LOCK_HELD_BY_OTHER, session="s1"))
    assert calls(log) == [("leader_file", "remove"), ("hooks", "submit")]
    assert args_of(log, "hooks", "submit")[0][0][0] == "demote"
    assert not h.published and h.leader_since is None


def test_role_checks_vouch_for_a_replica_only_once_consul_shows_it() -> None:
    h, log, _ = hub()
    h.exit_leader(t(LE, FO, Event.LOCK_HELD_BY_OTHER, session="s1"))
    h.vouch_replica(t(FO, FO, Event.LEASE_RENEWED, session="s1", valid_until=1003.0))
    h.mark_published(t(FO, FO, Event.REPLICA_PUBLISHED, session="s1"))
    h.vouch_replica(t(FO, FO, Event.LEASE_RENEWED, session="s1", valid_until=1004.0))
    rounds = [k for _, k in args_of(log, "checks", "pass_round")]
    assert [(r["lease"], r["roles"], r["valid_until"]) for r in rounds] == [
        (True, False, 1003.0), (True, True, 1004.0)]
    assert args_of(log, "publisher", "extend") == [((1003.0,), {}), ((1004.0,), {})]


def test_a_renewed_leader_passes_its_lease_check_and_has_the_lock_confirmed() -> None:
    h, log, _ = hub()
    h.vouch_lease(t(LE, LE, Event.LEASE_RENEWED, session="s1", valid_until=1003.0))
    assert [k for _, k in args_of(log, "checks", "pass_round")] == [
        {"lease": True, "roles": False, "valid_until": 1003.0}]
    assert args_of(log, "watcher", "confirm") == [(("s1",), {"max_age": TIMINGS.ttl})]


def test_a_confirmed_lock_vouches_for_the_primary_role_and_keeps_the_keys_value() -> None:
    h, log, _ = hub()
    observation = KeyObservation(exists=True, session="s1", value=b"garbage")
    h.vouch_lease(t(LE, LE, Event.LEASE_RENEWED, session="s1", valid_until=1003.0))
    log.clear()
    h.vouch_primary(t(LE, LE, Event.LOCK_HELD_BY_US, session="s1", observation=observation))
    assert [k["roles"] for _, k in args_of(log, "checks", "pass_round")] == [True]
    assert args_of(log, "acquirer", "keep_value") == [(("s1", observation), {})]


@pytest.mark.parametrize(("enabled", "expected"), [(True, ("checks", "prepare_lease_check")),
                                                   (False, ("keeper", "create"))])
def test_competing_starts_with_the_lease_check_when_there_is_one(
        enabled: bool, expected: tuple[str, str]) -> None:
    h, log, _ = hub(checks_enabled=enabled)
    h.prepare_session(t(NS, NS, Event.REPLICA_PUBLISHED))
    assert calls(log) == [expected]
    h.create_session(t(NS, NS, Event.LEASE_CHECK_PASSED, checks=("lease", "role")))
    assert calls(log)[-1] == ("keeper", "create")
    assert args_of(log, "keeper", "create")[-1] == ((("lease", "role"),), {})


def test_a_bound_check_missing_is_prepared_again() -> None:
    h, log, _ = hub()
    h.prepare_session(t(NS, NS, Event.BOUND_CHECK_MISSING, check_id="lease"))
    assert calls(log) == [("checks", "prepare_lease_check")]


def test_the_wait_for_another_primary_is_bounded_from_the_first_sighting() -> None:
    h, log, clock = hub()
    h.enter_leader(t(CA, LE, Event.LOCK_ACQUIRED, session="s1"))
    h.await_other_primary(t(LE, LE, Event.OTHER_PRIMARY_SEEN, session="s1", others=("old",)))
    clock.advance(1)
    h.await_other_primary(t(LE, LE, Event.OTHER_PRIMARY_SEEN, session="s1", others=("old",)))
    assert args_of(log, "publisher", "hold_for_other_primary_until") == [
        ((1000.0 + TIMINGS.other_primary_wait,), {})]
    # A new term waits afresh.
    h.enter_leader(t(CA, LE, Event.LOCK_ACQUIRED, session="s1"))
    h.await_other_primary(t(LE, LE, Event.OTHER_PRIMARY_SEEN, session="s1", others=("old",)))
    assert len(args_of(log, "publisher", "hold_for_other_primary_until")) == 2


def test_past_the_bound_it_publishes_counts_it_and_names_the_other_instance(
        caplog: pytest.LogCaptureFixture) -> None:
    h, log, _ = hub()
    h.publish_over_other_primary(t(LE, LE, Event.OTHER_PRIMARY_WAIT_OVER, session="s1",
                                   others=("_nomad-task-old",)))
    assert calls(log) == [("metrics", "published_over_other_primary"),
                          ("publisher", "publish_over_other_primary")]
    error = next(r for r in caplog.records if r.levelname == "ERROR")
    assert getattr(error, "others", None) == "_nomad-task-old"


def test_past_the_bound_it_evicts_the_provably_stale_primaries_before_publishing() -> None:
    h, log, _ = hub()
    h.publish_over_other_primary(t(LE, LE, Event.OTHER_PRIMARY_WAIT_OVER, session="s1",
                                   others=("old", "alive"), stale_primaries=(("n3", "old"),)))
    assert calls(log) == [("publisher", "evict_stale_primaries"),
                          ("metrics", "published_over_other_primary"),
                          ("publisher", "publish_over_other_primary")]
    assert args_of(log, "publisher", "evict_stale_primaries") == [((( ("n3", "old"),),), {})]


def test_a_lock_delay_asks_for_another_attempt_after_its_wait() -> None:
    h, log, _ = hub()
    h.retry_acquire(t(CA, CA, Event.LOCK_DELAYED, session="s1", retry_in=0.4))
    assert args_of(log, "acquirer", "campaign") == [(("s1",), {"after": 0.4})]


def test_targets_found_reach_the_checks() -> None:
    h, log, _ = hub()
    h.adopt_targets(t(NS, NS, Event.TARGETS_FOUND, targets=("a", "b")))
    assert args_of(log, "checks", "set_targets") == [((("a", "b"),), {})]


def test_an_entry_without_a_session_is_a_bug_said_out_loud() -> None:
    h, _, _ = hub()
    with pytest.raises(ValueError, match="without a session"):
        h.enter_follower(t(CA, FO, Event.LOCK_HELD_BY_OTHER))


def test_every_transition_is_counted_and_every_refusal_too() -> None:
    h, log, _ = hub()
    h.transitioned(t(CA, LE, Event.LOCK_ACQUIRED, session="s1"))
    h.refused(NS, Event.LOCK_FREE, "no session")
    assert args_of(log, "metrics", "transition") == [(("Candidate", "Leader", "lock_acquired"), {})]
    assert args_of(log, "metrics", "refused") == [(("NoSession", "lock_free"), {})]
