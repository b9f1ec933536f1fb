"""The lock watcher against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.election.watcher import LockWatcher, WatcherSettings
from consul_leader.fsm.states import Event
from tests.adapter_testing import KEY, TIMINGS, FakeClock, Posts, StrictPort, held, missing


def watcher() -> tuple[LockWatcher, StrictPort, Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    return LockWatcher(WatcherSettings(KEY, TIMINGS), port, posts, clock=clock), port, posts, clock


def blocking(index: int):  # type: ignore[no-untyped-def]
    return lambda call: call.kwargs["index"] == index and call.kwargs["wait"] == "300s"


def test_without_a_session_it_watches_but_reports_nothing() -> None:
    w, port, posts, _ = watcher()
    port.expect("kv_get", held("other"), check=blocking(0))
    w.watch_step()
    assert posts.items == [] and w.last is not None
    port.assert_done()


def test_each_answer_is_classified_against_the_followed_session() -> None:
    w, port, posts, clock = watcher()
    w.follow("s1")
    port.expect("kv_get", held("other", index=5), check=blocking(0))
    port.expect("kv_get", held(None, index=6), check=blocking(5))
    port.expect("kv_get", held("s1", index=7, modify_index=7), check=blocking(6))
    port.expect("kv_get", missing(index=8), check=blocking(7))
    for _ in range(4):
        clock.now = w.watch_step() or clock.now
    assert posts.events() == [Event.LOCK_HELD_BY_OTHER, Event.LOCK_FREE, Event.LOCK_HELD_BY_US,
                              Event.KEY_MISSING]
    assert posts.items[2].facts.fencing_token == 7
    assert all(item.facts.session == "s1" for item in posts.items)
    port.assert_done()


def test_an_index_going_backwards_or_missing_starts_over_at_zero() -> None:
    w, port, _, clock = watcher()
    port.expect("kv_get", held("a", index=9), check=blocking(0))
    port.expect("kv_get", held("a", index=3), check=blocking(9))
    port.expect("kv_get", held("a", index=None), check=blocking(0))
    port.expect("kv_get", held("a", index=4), check=blocking(0))
    for _ in range(4):
        clock.now = w.watch_step() or clock.now
    port.assert_done()


def test_answers_that_come_back_at_once_are_rate_limited() -> None:
    w, port, _, clock = watcher()
    port.always("kv_get", lambda call: held("a", index=call.kwargs["index"] + 1))
    started = clock.now
    for _ in range(100):
        due = w.watch_step()
        assert due is not None and due >= clock.now + TIMINGS.min_watch_interval
        clock.now = due
    assert clock.now - started >= 99.9 * TIMINGS.min_watch_interval


def test_a_failing_watch_backs_off_and_starts_over() -> None:
    w, port, _, clock = watcher()
    port.expect("kv_get", held("a", index=9))
    port.expect("kv_get", ConsulUnavailable("connection refused"))
    port.expect("kv_get", held("a", index=10), check=blocking(0))
    clock.now = w.watch_step() or clock.now
    due = w.watch_step()
    assert due is not None and due > clock.now
    clock.now = due
    w.watch_step()
    port.assert_done()


def test_a_recent_sighting_confirms_the_lock_without_a_request() -> None:
    w, port, posts, clock = watcher()
    w.follow("s1")
    port.expect("kv_get", held("s1"))
    w.watch_step()
    posts.clear()
    clock.advance(TIMINGS.ttl / 2)

    w.confirm("s1", max_age=TIMINGS.ttl)

    assert posts.events() == [Event.LOCK_HELD_BY_US]
    assert w.confirm_step() is None
    port.assert_done()


def test_an_old_sighting_is_confirmed_with_a_consistent_read() -> None:
    w, port, posts, clock = watcher()
    w.follow("s1")
    port.expect("kv_get", held("s1"))
    w.watch_step()
    posts.clear()
    clock.advance(TIMINGS.ttl + 1)
    woken: list[bool] = []
    w.wake_confirm = lambda: woken.append(True)

    w.confirm("s1", max_age=TIMINGS.ttl)
    assert posts.items == [] and woken == [True]
    port.expect("kv_get", ConsulUnavailable("timeout"), check=lambda c: c.kwargs["consistent"])
    port.expect("kv_get", held("other"), check=lambda c: c.kwargs["consistent"])
    due = w.confirm_step()
    assert due is not None and due > clock.now
    clock.now = due
    assert w.confirm_step() is None

    assert posts.events() == [Event.LOCK_HELD_BY_OTHER]
    port.assert_done()


def test_a_confirmation_for_a_session_no_longer_followed_is_dropped() -> None:
    w, port, posts, _ = watcher()
    w.follow("s1")
    w.confirm("s1", max_age=TIMINGS.ttl)
    w.follow(None)
    assert w.confirm_step() is None
    assert port.calls == [] and posts.items == []


def test_a_stopped_watcher_sends_nothing() -> None:
    w, port, _, _ = watcher()
    w.stop()
    assert w.watch_step() is None and w.confirm_step() is None
    assert port.calls == []


def confirming(w: LockWatcher, clock: FakeClock, port: StrictPort, posts: Posts) -> None:
    """A leader whose last sighting of its lock is old: `confirm` asks for a consistent read."""
    w.follow("s1")
    port.expect("kv_get", held("s1", index=10), check=blocking(0))
    clock.now = w.watch_step() or clock.now
    posts.clear()
    clock.advance(TIMINGS.ttl + 1)
    w.confirm("s1", max_age=TIMINGS.ttl)


def test_a_confirmation_overtaken_by_a_watch_answer_that_disagrees_is_not_posted() -> None:
    """The consistent read is answered before the key is deleted, the blocking watch reports
    the deletion while that answer is still on its way: posting the older answer after the
    newer one would take a candidate back to Leader with its old fencing token."""
    w, port, posts, clock = watcher()
    confirming(w, clock, port, posts)

    def answered_before_the_delete(call: object) -> object:
        w.watch_step()  # meanwhile the watch returns with the deletion, and reports it
        return held("s1", index=10, modify_index=10)

    port.expect("kv_get", answered_before_the_delete, check=lambda c: c.kwargs["consistent"])
    port.expect("kv_get", missing(index=12), check=blocking(10))
    assert w.confirm_step() is None

    assert posts.events() == [Event.KEY_MISSING]
    port.assert_done()


def test_a_confirmation_a_watch_answer_agrees_with_is_posted() -> None:
    w, port, posts, clock = watcher()
    confirming(w, clock, port, posts)

    def answered_with_the_watch(call: object) -> object:
        w.watch_step()  # the watch returns too (say the value changed): still ours
        return held("s1", index=11, modify_index=11)

    port.expect("kv_get", answered_with_the_watch, check=lambda c: c.kwargs["consistent"])
    port.expect("kv_get", held("s1", index=11, modify_index=11), check=blocking(10))
    assert w.confirm_step() is None

    assert posts.events() == [Event.LOCK_HELD_BY_US, Event.LOCK_HELD_BY_US]
    port.assert_done()
