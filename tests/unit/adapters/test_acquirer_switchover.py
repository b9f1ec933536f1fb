"""The acquirer's switchover and priority rules (issue 12), against a strict fake of the Consul
port and a fake clock: what keeps a candidate out of the race, the delay for peers of higher
priority, and the hand-over (hint, then release)."""

from __future__ import annotations

import json

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.consul.port import HealthEntry, HealthRead, KeyRead
from consul_leader.adapters.election.acquirer import Acquirer, AcquirerSettings
from consul_leader.adapters.election.key import Hint, LockHolder, hint_key
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event
from tests.adapter_testing import KEY, TIMINGS, FakeClock, Posts, StrictPort, held, missing

HOLDER = LockHolder(host="h1", service="db")
HINT = hint_key(KEY)
CONSISTENT = {"check": lambda call: call.kwargs["consistent"]}


def acquirer(priority: int = 1) -> tuple[Acquirer, StrictPort, Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = AcquirerSettings(KEY, HOLDER, TIMINGS, priority=priority, instance="me",
                                peers="db", hint_key=HINT)
    return Acquirer(settings, port, posts, clock=clock), port, posts, clock


def peer(instance: str, priority: int, passing: bool = True) -> HealthEntry:
    return HealthEntry(f"consul-leader-{instance}-t", "n1", ("replica",),
                       ("passing",) if passing else ("critical",),
                       {"instance": instance, "priority": str(priority)})


def peers(*entries: HealthEntry) -> HealthRead:
    return HealthRead(entries)


def hint(target: str | None, *, source: str = "old", hold_off: float = 5.0, lock_index: int = 7,
         modify_index: int = 50) -> KeyRead:
    value = Hint(source, target, hold_off, lock_index).encode()
    return KeyRead(KeyObservation(exists=True, value=value, modify_index=modify_index), 50)


def free_key(lock_index: int = 7) -> KeyRead:
    return KeyRead(KeyObservation(exists=True, session=None, lock_index=lock_index,
                                  modify_index=60), 60)


def expect_acquired(port: StrictPort) -> None:
    port.expect("kv_acquire", True).expect("kv_get", held("s1"), **CONSISTENT)


def test_priority_zero_never_asks_consul_and_is_excluded_for_good() -> None:
    a, port, posts, _ = acquirer(priority=0)
    a.campaign("s1")
    assert a.step() is None
    assert posts.events() == [Event.LEAD_EXCLUDED] and posts.last().facts.retry_in is None
    assert port.calls == []
    assert a.exclusion() == {"reason": "priority 0: this instance never leads", "remaining": None}


def test_peers_of_higher_priority_go_first_then_it_acquires_without_asking_again() -> None:
    a, port, posts, clock = acquirer(priority=1)
    port.expect("kv_get", missing(), check=lambda c: c.args == (HINT,))
    port.expect("health_service", peers(peer("p3", 3), peer("p2", 2), peer("down", 5, False),
                                        peer("zero", 0), peer("me", 1)))
    a.campaign("s1")
    a.step()
    assert posts.events() == [Event.HIGHER_PRIORITY_SEEN]
    assert posts.last().facts.retry_in == TIMINGS.priority_delay(2) == 0.6
    assert posts.last().facts.others == ("p2", "p3")

    a.campaign("s1", after=0.6)  # the machine's retry_acquire
    clock.advance(0.6)
    port.expect("kv_get", missing(), check=lambda c: c.args == (HINT,))
    expect_acquired(port)
    a.step()
    assert posts.last().event is Event.LOCK_ACQUIRED
    port.assert_done()


def test_a_change_of_the_key_makes_it_look_at_the_peers_again() -> None:
    a, port, posts, _ = acquirer(priority=1)
    port.always("kv_get", missing()).always("health_service", peers(peer("p2", 2)))
    a.campaign("s1")
    a.step()
    a.campaign("s1")  # lock_free while waiting: someone took the key and let it go
    a.step()
    assert posts.events() == [Event.HIGHER_PRIORITY_SEEN, Event.HIGHER_PRIORITY_SEEN]


def test_no_peer_above_it_or_no_answer_means_it_competes_at_once() -> None:
    for answer in (peers(peer("p1", 1), peer("p0", 0)), ConsulUnavailable("no leader")):
        a, port, posts, _ = acquirer(priority=1)
        port.expect("kv_get", missing()).expect("health_service", answer)
        expect_acquired(port)
        a.campaign("s1")
        a.step()
        assert posts.events() == [Event.LOCK_ACQUIRED]
        port.assert_done()


def test_a_fresh_hint_for_another_instance_keeps_it_out_until_the_hold_off_ends() -> None:
    a, port, posts, clock = acquirer()
    port.expect("kv_get", hint("other", hold_off=5.0)).expect("kv_get", free_key())
    a.campaign("s1")
    assert a.step() == clock.now + 5.0
    assert posts.events() == [Event.LEAD_EXCLUDED]
    assert posts.last().facts.retry_in == 5.0
    assert a.exclusion() == {"reason": "a switchover hands over to other", "remaining": 5.0}

    clock.advance(5.0)
    assert a.step() is None
    assert posts.events() == [Event.LEAD_EXCLUDED, Event.HOLD_OFF_OVER]
    assert posts.last().facts.session == "s1" and a.exclusion() is None


def test_the_hint_is_judged_on_the_readers_clock_from_when_it_first_saw_it() -> None:
    a, port, posts, clock = acquirer()
    port.expect("kv_get", hint("other", hold_off=5.0)).expect("kv_get", free_key())
    a.campaign("s1")
    a.step()
    clock.advance(5.0)
    a.step()  # hold_off_over
    port.expect("kv_get", hint("other", hold_off=5.0)).expect("kv_get", free_key())
    port.expect("health_service", peers())
    expect_acquired(port)
    a.campaign("s1")  # the same hint (same ModifyIndex), seen 5 s ago: spent
    a.step()
    assert posts.last().event is Event.LOCK_ACQUIRED
    port.assert_done()


def test_a_hint_is_spent_once_anyone_acquired_the_lock_since() -> None:
    a, port, posts, _ = acquirer()
    port.expect("kv_get", hint("other", lock_index=7)).expect("kv_get", free_key(lock_index=8))
    port.expect("health_service", peers())
    expect_acquired(port)
    a.campaign("s1")
    a.step()
    assert posts.events() == [Event.LOCK_ACQUIRED]


def test_a_hint_naming_it_skips_its_own_hold_off_and_the_priority_delay() -> None:
    a, port, posts, clock = acquirer(priority=1)
    a.hold_off(clock.now + 5.0)
    port.expect("kv_get", hint("me")).expect("kv_get", free_key())
    expect_acquired(port)
    a.campaign("s1")
    a.step()
    assert posts.events() == [Event.LOCK_ACQUIRED]
    port.assert_done()


def test_its_own_hold_off_keeps_it_out_of_the_race() -> None:
    a, port, posts, clock = acquirer()
    a.hold_off(clock.now + 2.0)
    port.expect("kv_get", missing())
    a.campaign("s1")
    assert a.step() == clock.now + 2.0
    assert posts.events() == [Event.LEAD_EXCLUDED]
    assert a.exclusion() == {"reason": "holding off after a switchover", "remaining": 2.0}
    clock.advance(2.0)
    a.step()
    assert posts.last().event is Event.HOLD_OFF_OVER


def test_a_garbled_hint_is_ignored() -> None:
    a, port, posts, _ = acquirer()
    garbled = KeyRead(KeyObservation(exists=True, value=b"{not json"), 3)
    port.expect("kv_get", garbled).expect("health_service", peers())
    expect_acquired(port)
    a.campaign("s1")
    a.step()
    assert posts.events() == [Event.LOCK_ACQUIRED]


def test_hand_over_writes_the_hint_then_releases_keeping_the_value() -> None:
    a, port, _, _ = acquirer()
    released: list[bool] = []
    a.on_released = released.append
    port.expect("kv_get", KeyRead(KeyObservation(exists=True, session="s1", lock_index=9), 9),
                **CONSISTENT)
    port.expect("kv_put", True, check=lambda c: c.args[0] == HINT and json.loads(c.args[1]) == {
        "from": "me", "to": "p2", "hold_off": 3.0, "lock_index": 9})
    port.expect("kv_release", True, check=lambda c: c.args == (KEY, "s1", HOLDER.value("s1")))
    a.hand_over("s1", "p2", 3.0)
    assert a.step() is None
    assert released == [True]
    port.assert_done()


def test_hand_over_of_a_lock_no_longer_ours_releases_nothing() -> None:
    a, port, _, _ = acquirer()
    released: list[bool] = []
    a.on_released = released.append
    port.expect("kv_get", held("someone-else"), **CONSISTENT)
    a.hand_over("s1", None, 3.0)
    a.step()
    assert released == [False]
    port.assert_done()


def test_hand_over_is_retried_after_a_fault() -> None:
    a, port, _, clock = acquirer()
    released: list[bool] = []
    a.on_released = released.append
    port.expect("kv_get", ConsulUnavailable("no leader"))
    a.hand_over("s1", None, 3.0)
    due = a.step()
    assert due is not None and due > clock.now and released == []
    clock.now = due
    port.expect("kv_get", KeyRead(KeyObservation(exists=True, session="s1", lock_index=2), 2))
    port.expect("kv_put", True).expect("kv_release", True)
    a.step()
    assert released == [True]
