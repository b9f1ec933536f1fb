"""The acquirer against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

from consul_leader.adapters.consul.errors import ConsulDenied, ConsulUnavailable, InvalidSession
from consul_leader.adapters.election.acquirer import Acquirer, AcquirerSettings
from consul_leader.adapters.election.key import LockHolder
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import lock_delay_wait
from tests.adapter_testing import KEY, TIMINGS, FakeClock, Posts, StrictPort, held, missing

HOLDER = LockHolder(host="h1", service="db")
CONSISTENT = {"check": lambda call: call.kwargs["consistent"]}


def acquirer() -> tuple[Acquirer, StrictPort, Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = AcquirerSettings(KEY, HOLDER, TIMINGS)
    return Acquirer(settings, port, posts, clock=clock), port, posts, clock


def test_nothing_is_tried_until_the_machine_campaigns() -> None:
    a, port, _, _ = acquirer()
    assert a.step() is None and port.calls == []


def test_acquired_only_when_consul_then_shows_our_session_holding_the_key() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_acquire", True, check=lambda c: c.args == (KEY, "s1", HOLDER.value("s1")))
    port.expect("kv_get", held("s1", modify_index=42), **CONSISTENT)
    a.campaign("s1")

    assert a.step() is None  # one attempt per request

    assert posts.events() == [Event.LOCK_ACQUIRED]
    assert posts.last().facts.fencing_token == 42
    assert posts.last().facts.session == "s1"
    port.assert_done()


def test_an_acquire_that_said_true_but_the_key_shows_another_holder_is_not_leadership() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_acquire", True).expect("kv_get", held("other"), **CONSISTENT)
    a.campaign("s1")
    a.step()
    assert posts.events() == [Event.LOCK_HELD_BY_OTHER]


def test_refused_by_another_holder_reports_it_and_stops() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_acquire", False).expect("kv_get", held("other"), **CONSISTENT)
    a.campaign("s1")
    assert a.step() is None
    assert posts.events() == [Event.LOCK_HELD_BY_OTHER]
    assert a.step() is None and len(port.calls) == 2


def test_refused_on_a_free_key_is_a_lock_delay_with_a_growing_wait() -> None:
    a, port, posts, _ = acquirer()
    waits = []
    for attempt in range(4):
        port.expect("kv_acquire", False).expect("kv_get", held(None), **CONSISTENT)
        a.campaign("s1")
        a.step()
        assert posts.last().event is Event.LOCK_DELAYED
        waits.append(posts.last().facts.retry_in)
        assert waits[-1] == lock_delay_wait(TIMINGS.lock_delay, attempt)
    assert waits == sorted(waits) and waits[0] > 0
    port.assert_done()


def test_the_next_attempt_waits_for_the_time_the_machine_gave() -> None:
    a, port, _, clock = acquirer()
    a.campaign("s1", after=0.5)
    assert a.step() == clock.now + 0.5
    assert port.calls == []


def test_a_key_deleted_between_acquire_and_read_is_tried_again_shortly() -> None:
    a, port, posts, clock = acquirer()
    port.expect("kv_acquire", False).expect("kv_get", missing(), **CONSISTENT)
    a.campaign("s1")
    due = a.step()
    assert posts.items == []
    assert due == clock.now + TIMINGS.min_watch_interval


def test_an_invalid_session_is_reported_lost() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_acquire", InvalidSession("Consul does not know the session", status=500))
    a.campaign("s1")
    assert a.step() is None
    assert posts.events() == [Event.SESSION_LOST] and posts.last().facts.session == "s1"


def test_transient_faults_are_retried_with_a_pause_until_the_machine_stands_down() -> None:
    a, port, posts, clock = acquirer()
    port.always("kv_acquire", ConsulUnavailable("no cluster leader"))
    a.campaign("s1")
    for _ in range(5):
        due = a.step()
        assert due is not None and due > clock.now
        clock.now = due
    a.stand_down()
    assert a.step() is None
    assert posts.items == []


def test_a_denied_acquire_waits_the_longest_pause() -> None:
    a, port, _, clock = acquirer()
    port.expect("kv_acquire", ConsulDenied("permission denied", status=403))
    a.campaign("s1")
    assert a.step() == clock.now + TIMINGS.retry_cap


def test_an_overwritten_value_is_written_back_with_our_session() -> None:
    a, port, _, _ = acquirer()
    port.expect("kv_acquire", True, check=lambda c: c.args == (KEY, "s1", HOLDER.value("s1")))
    a.keep_value("s1", KeyObservation(exists=True, session="s1", value=b"garbage"))
    a.step()
    a.keep_value("s1", KeyObservation(exists=True, session="s1", value=HOLDER.value("s1")))
    a.step()
    port.assert_done()


def test_a_failed_write_back_is_only_logged() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_acquire", ConsulUnavailable("timeout"))
    a.keep_value("s1", KeyObservation(exists=True, session="s1", value=None))
    assert a.step() is None
    assert posts.items == []
