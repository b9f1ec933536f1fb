"""Lease and backoff rules, with made-up monotonic times (no sleeping)."""

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_leader.fsm import Lease, lock_delay_wait, retry_delay

TTL = 15.0


def confirmed_lease(sent_at: float = 100.0, answered_at: float = 100.2) -> Lease:
    lease = Lease(ttl=TTL)
    assert lease.confirm(sent_at, answered_at)
    return lease


def test_fresh_lease_is_expired_and_has_nothing_left() -> None:
    lease = Lease(ttl=TTL)
    assert lease.expired(0.0)
    assert lease.remaining(0.0) == 0.0


def test_fresh_lease_accepts_any_confirmation_and_counts_from_the_send_time() -> None:
    lease = Lease(ttl=TTL)
    assert lease.confirm(sent_at=100.0, now=130.0)  # a slow create is still our session
    assert lease.deadline == 115.0


def test_lease_is_valid_until_send_time_plus_ttl() -> None:
    lease = confirmed_lease(sent_at=100.0)
    assert not lease.expired(114.9)
    assert lease.remaining(110.0) == pytest.approx(5.0)
    assert lease.expired(115.0)
    assert lease.remaining(115.0) == 0.0
    assert lease.remaining(200.0) == 0.0


def test_renew_answered_in_time_extends_the_lease() -> None:
    lease = confirmed_lease(sent_at=100.0)
    assert lease.confirm(sent_at=110.0, now=110.3)
    assert lease.deadline == 125.0


def test_renew_answered_after_the_deadline_does_not_revive_the_lease() -> None:
    # e.g. the process was SIGSTOPped between sending the renew and reading the answer.
    lease = confirmed_lease(sent_at=100.0)
    assert not lease.confirm(sent_at=110.0, now=115.0)
    assert lease.deadline == 115.0
    assert lease.expired(115.0)


def test_late_answer_to_an_older_renew_never_shortens_the_lease() -> None:
    lease = confirmed_lease(sent_at=100.0)
    assert lease.confirm(sent_at=110.0, now=110.1)
    assert lease.confirm(sent_at=105.0, now=111.0)  # reordered answers
    assert lease.deadline == 125.0


def test_clear_forgets_the_deadline() -> None:
    lease = confirmed_lease()
    lease.clear()
    assert lease.deadline is None
    assert lease.expired(100.3)
    assert lease.confirm(sent_at=200.0, now=200.1)  # a new session starts afresh


@pytest.mark.parametrize(
    ("attempt", "remaining", "expected"),
    [
        (0, 15.0, 0.25),
        (1, 15.0, 0.5),
        (2, 15.0, 1.0),
        (3, 15.0, 2.0),  # capped
        (10, 15.0, 2.0),
        (10_000, 15.0, 2.0),  # no overflow
        (3, 3.0, 1.0),  # a third of what is left
        (0, 0.3, 0.1),
        (0, 0.0, 0.05),  # floor: never a hot loop
        (5, 0.01, 0.05),
    ],
)
def test_retry_delay(attempt: int, remaining: float, expected: float) -> None:
    assert retry_delay(attempt, remaining) == pytest.approx(expected)


def test_retry_delay_uses_given_base_and_cap() -> None:
    assert retry_delay(2, 60.0, base=1.0, cap=3.0) == 3.0
    assert retry_delay(1, 60.0, base=1.0, cap=3.0) == 2.0


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1e6))
def test_retry_delay_is_always_within_its_bounds(attempt: int, remaining: float) -> None:
    delay = retry_delay(attempt, remaining)
    assert 0.05 <= delay <= 2.0
    assert delay <= max(0.05, remaining / 3)


@pytest.mark.parametrize(
    ("lock_delay", "attempt", "expected"),
    [
        (15.0, 0, 1.0),  # a long configured delay: wait up to the 1 s cap at once
        (15.0, 10_000, 1.0),  # never more than 1 s: takeover within 1 s of the delay's end
        (0.0, 0, 0.1),  # never 0: Consul may apply a delay of its own
        (0.0, 1, 0.2),
        (0.0, 3, 0.8),
        (0.0, 9, 1.0),  # backs off to the cap, not a hot loop against a 15 s default delay
        (0.05, 0, 0.1),
        (0.5, 0, 0.5),
        (0.5, 2, 0.4),
    ],
)
def test_lock_delay_wait(lock_delay: float, attempt: int, expected: float) -> None:
    assert lock_delay_wait(lock_delay, attempt) == pytest.approx(expected)


@pytest.mark.parametrize("rule", [lambda: retry_delay(-1, 5.0), lambda: lock_delay_wait(1.0, -1)])
def test_negative_attempt_is_a_programming_error(rule: Callable[[], float]) -> None:
    with pytest.raises(ValueError, match="attempt"):
        rule()
