"""classify(): from one read of the lock key to an event."""

import pytest

from consul_leader.fsm import Event, KeyObservation, classify

OURS, THEIRS = "5f1c-ours", "9a2e-theirs"


@pytest.mark.parametrize(
    ("observation", "our_session", "expected"),
    [
        (KeyObservation(exists=False), OURS, Event.KEY_MISSING),
        (KeyObservation(exists=False, session=OURS), OURS, Event.KEY_MISSING),
        (KeyObservation(exists=True, lock_index=3), OURS, Event.LOCK_FREE),
        (KeyObservation(exists=True, session="", lock_index=3), OURS, Event.LOCK_FREE),
        (KeyObservation(exists=True, session=OURS, lock_index=4), OURS, Event.LOCK_HELD_BY_US),
        (KeyObservation(exists=True, session=THEIRS), OURS, Event.LOCK_HELD_BY_OTHER),
        (KeyObservation(exists=True, session=THEIRS), None, Event.LOCK_HELD_BY_OTHER),
        (KeyObservation(exists=True, session=THEIRS), "", Event.LOCK_HELD_BY_OTHER),
        (KeyObservation(exists=True), None, Event.LOCK_FREE),
    ],
    ids=[
        "absent",
        "absent-ignores-stale-session",
        "released-session-omitted",
        "released-session-empty",
        "ours",
        "theirs",
        "theirs-while-we-have-no-session",
        "theirs-while-our-session-is-empty",
        "free-while-we-have-no-session",
    ],
)
def test_classify(observation: KeyObservation, our_session: str | None, expected: Event) -> None:
    assert classify(observation, our_session) is expected


def test_session_ids_compare_exactly() -> None:
    observed = KeyObservation(exists=True, session=OURS.upper())
    assert classify(observed, OURS) is Event.LOCK_HELD_BY_OTHER
