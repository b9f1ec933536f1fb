"""Judging a store's record against Consul's terms: hand-made records, and once against the
stand-in's own journal."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.fencing.judge import FencingFigures, Term, judge, lock_terms
from tests.fencing.store import Attempt, FencedStore
from tests.fencing.writers import figures_of

KEY = "consul-leader/db/lock"
# Two terms: session A took the key at index 10 (t=1) and lost it at t=5; B took it at 20 (t=6).
TERMS = [Term("A", 10, 1.0, 5.0), Term("B", 20, 6.0)]


def attempts(*rows: tuple[str, int, str, bool, float]) -> list[Attempt]:
    """(writer, token, session, accepted, at) in the order the store decided them."""
    return [Attempt(seq, writer, token, session, accepted, None, at)
            for seq, (writer, token, session, accepted, at) in enumerate(rows, 1)]


def figures(*rows: tuple[str, int, str, bool, float]) -> FencingFigures:
    return judge(attempts(*rows), TERMS)


def test_writes_of_the_current_term_are_neither_late_nor_stale() -> None:
    result = figures(("a", 10, "A", True, 2.0), ("b", 20, "B", True, 7.0))
    assert (result.accepted, result.late, result.stale_accepted) == (2, 0, [])
    assert result.writers == 2
    assert result.violations(0.0) == []


@pytest.mark.parametrize("at, late, unfenced", [(5.5, 1, 0), (6.5, 0, 1)],
                         ids=["nobody held the key: late", "B's term had begun: unfenced"])
def test_a_write_of_an_ended_term_before_the_next_term_wrote_is_counted_not_a_violation(
        at: float, late: int, unfenced: int) -> None:
    result = figures(("a", 10, "A", True, at), ("b", 20, "B", True, 7.0))
    assert (result.late, result.unfenced, result.stale_accepted) == (late, unfenced, [])
    assert result.violations(0.0) == []


def test_a_write_accepted_from_an_ended_term_after_a_later_term_wrote_is_stale() -> None:
    result = figures(("b", 20, "B", True, 7.0), ("a", 10, "A", True, 7.5))
    assert [a.writer for a in result.stale_accepted] == ["a"]
    (violation,) = result.violations(0.0)
    assert "1 stale write(s) accepted" in violation and "token 10" in violation


def test_a_stale_write_the_store_rejected_is_counted_as_rejected_not_stale() -> None:
    result = figures(("b", 20, "B", True, 7.0), ("a", 10, "A", False, 7.5))
    assert (result.accepted, result.rejected, result.stale_accepted) == (1, 1, [])
    assert result.violations(0.0) == []


def test_a_token_outside_every_term_or_of_another_session_is_foreign() -> None:
    result = figures(("a", 5, "A", True, 2.0), ("a", 21, "A", True, 7.0))
    assert [a.token for a in result.foreign] == [5, 21]
    assert "2 write(s) with a token Consul never gave that session" in \
        result.violations(0.0)[0]


def test_a_rejection_with_no_higher_token_accepted_before_is_wrong() -> None:
    result = figures(("a", 10, "A", True, 2.0), ("a", 10, "A", False, 2.1))
    assert len(result.wrongly_rejected) == 1
    assert "rejected though no higher token" in result.violations(0.0)[0]


def test_the_store_order_decides_not_the_list_order() -> None:
    # Listed the other way round, the record still says B's write was decided first.
    rows = attempts(("b", 20, "B", True, 7.0), ("a", 10, "A", True, 7.5))
    assert len(judge(list(reversed(rows)), TERMS).stale_accepted) == 1


def journal(*events: tuple[str, str, int | None, float]) -> list[dict[str, Any]]:
    out = []
    for kind, session, index, mono in events:
        event: dict[str, Any] = {"kind": kind, "key": KEY, "session": session, "mono": mono}
        if index is not None:
            event["modify_index"] = index
        out.append(event)
    return out


def test_terms_come_from_acquisitions_and_releases_of_the_key() -> None:
    events = [*journal(("kv_lock_acquired", "A", 10, 1.0), ("kv_lock_released", "A", None, 5.0)),
              {"kind": "kv_lock_acquired", "key": "other", "session": "X", "modify_index": 15,
               "mono": 5.5},
              {"kind": "session_created", "id": "B", "mono": 5.8},
              *journal(("kv_lock_acquired", "B", 20, 6.0))]
    assert lock_terms(events, KEY) == TERMS


def test_the_same_session_taking_the_key_again_opens_a_new_term() -> None:
    events = journal(("kv_lock_acquired", "A", 10, 1.0), ("kv_lock_released", "A", None, 2.0),
                     ("kv_lock_acquired", "A", 14, 2.5))
    assert lock_terms(events, KEY) == [Term("A", 10, 1.0, 2.0), Term("A", 14, 2.5)]
    # The old token after the new term wrote is stale even though the session is the same.
    result = judge(attempts(("a", 14, "A", True, 3.0), ("a", 10, "A", True, 3.1)),
                   lock_terms(events, KEY))
    assert len(result.stale_accepted) == 1


def test_when_the_journal_dropped_its_oldest_events_older_tokens_are_unjudged() -> None:
    rows = attempts(("a", 5, "A", True, 0.5), ("a", 10, "A", True, 2.0))
    assert [a.token for a in judge(rows, TERMS).foreign] == [5]
    dropped = judge(rows, TERMS, journal_complete=False)
    assert (dropped.foreign, dropped.unjudged, dropped.accepted) == ([], 1, 1)


def test_figures_of_a_stand_in_whose_journal_dropped_events_leave_older_tokens_unjudged(
) -> None:
    def figures_with(capacity: int) -> FencingFigures:
        with ConsulDouble(nodes=("n1",), journal_capacity=capacity) as consul:
            agent = consul.node_addr("n1")
            store = FencedStore()
            for _ in range(3):  # three terms of three sessions: 6+ events
                session = requests.put(f"{agent}/v1/session/create", json={"LockDelay": "0s"},
                                       timeout=5).json()["ID"]
                assert requests.put(f"{agent}/v1/kv/{KEY}", params={"acquire": session},
                                    timeout=5).json() is True
                token = requests.get(f"{agent}/v1/kv/{KEY}", timeout=5).json()[0]["ModifyIndex"]
                store.attempt("w", token, session)
                requests.put(f"{agent}/v1/session/destroy/{session}", timeout=5)
            return figures_of(store, consul, KEY)

    whole = figures_with(capacity=1000)
    assert (whole.terms, whole.accepted, whole.foreign, whole.unjudged) == (3, 3, [], 0)
    dropped = figures_with(capacity=4)
    assert dropped.foreign == [] and dropped.unjudged >= 1
