"""Judging a fenced store's record against Consul's history of the lock key.

Pure functions (no I/O), unit-tested with hand-made records.

Consul's side comes from the stand-in's event journal: each `kv_lock_acquired` of the key
opens a **term** (the session, the key's ModifyIndex when taken: the fencing token the
sidecar hands out, and the instant), each `kv_lock_released` of it closes it. ModifyIndex is
a Raft index, so term k's tokens are [its index, the next term's index).

Definitions (per run; the store's own verdicts are not trusted, only its record of what it
received, in the order it decided):
* **accepted** / **rejected**: the store's answers (200 / 409).
* **late write**: an accepted write whose term Consul had already ended when the store
  received it (the writer's sidecar had not yet noticed, or the writer had not yet read
  that it had), while nobody else held the key (say during a lock-delay). Harmless: no
  other leader exists. Counted, never a violation.
* **unfenced write**: an accepted write whose term had ended, made while a later term had
  begun in Consul but had not yet written: no token can stop it (the store has not seen the
  newer one), so it overlaps the new leader. A lock-delay of at least the TTL rules it out
  for a leader cut off from Consul (it steps down before anyone else may take the key).
  Counted, never a violation.
* **stale write accepted**: a write of an ended term accepted after a write of a later term
  had been accepted: what fencing exists to stop. Must be 0.
* **foreign token**: a write whose token Consul never gave to the session the writer named
  (the token falls in no term, or in another session's): the token's path from Consul to the
  application is broken. Must be 0.
* **wrongly rejected**: a 409 although no higher token had been accepted before (the store
  is too strict: lost liveness). Must be 0.

The journal keeps the newest events only (100,000): when it dropped some, writes whose token
is older than the first term it still shows are counted as `unjudged` instead of foreign.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fencing.store import Attempt

ACQUIRED, RELEASED = "kv_lock_acquired", "kv_lock_released"


@dataclass
class Term:
    """One holding of the lock key, as Consul's journal tells it."""

    session: str
    token: int  # the key's ModifyIndex when taken: the lowest token of the term
    started: float  # time.monotonic()
    ended: float | None = None  # released, invalidated or deleted; None: still held

    def ended_by(self, instant: float) -> bool:
        return self.ended is not None and self.ended <= instant


def lock_terms(events: Iterable[Mapping[str, Any]], key: str) -> list[Term]:
    """The key's terms from journal events (any kinds, in journal order)."""
    terms: list[Term] = []
    for event in events:
        if event.get("key") != key:
            continue
        if event["kind"] == ACQUIRED:
            terms.append(Term(event["session"], int(event["modify_index"]), event["mono"]))
        elif event["kind"] == RELEASED and terms and terms[-1].session == event["session"] \
                and terms[-1].ended is None:
            terms[-1].ended = event["mono"]
    return terms


@dataclass
class FencingFigures:
    attempts: int = 0
    accepted: int = 0
    rejected: int = 0
    late: int = 0
    unfenced: int = 0
    stale_accepted: list[Attempt] = field(default_factory=list)
    foreign: list[Attempt] = field(default_factory=list)
    wrongly_rejected: list[Attempt] = field(default_factory=list)
    writers: int = 0  # distinct writers with an accepted write
    unjudged: int = 0  # tokens older than a journal that dropped its oldest events shows
    terms: int = 0  # terms Consul's journal shows

    def violations(self, origin: float) -> list[str]:
        found = []
        for what, attempts in (
                ("stale write(s) accepted (a later term had written)", self.stale_accepted),
                ("write(s) with a token Consul never gave that session", self.foreign),
                ("write(s) rejected though no higher token had been accepted",
                 self.wrongly_rejected)):
            if attempts:
                found.append(f"fencing: {len(attempts)} {what}, first: "
                             f"{describe(attempts[0], origin)}")
        return found

    def to_json(self) -> dict[str, int]:
        return {"accepted": self.accepted, "rejected": self.rejected, "late": self.late,
                "unfenced": self.unfenced, "stale_accepted": len(self.stale_accepted),
                "foreign_tokens": len(self.foreign),
                "wrongly_rejected": len(self.wrongly_rejected),
                "writers": self.writers, "terms": self.terms, "unjudged": self.unjudged}


def describe(attempt: Attempt, origin: float) -> str:
    verdict = "accepted" if attempt.accepted else "rejected"
    return (f"writer {attempt.writer[:8]} token {attempt.token} session "
            f"{attempt.session[:8]} {verdict} at +{attempt.at - origin:.2f}s "
            f"(highest before: {attempt.highest_before})")


def judge(attempts: Sequence[Attempt], terms: Sequence[Term],
          journal_complete: bool = True) -> FencingFigures:
    figures = FencingFigures(attempts=len(attempts), terms=len(terms))
    starts = [term.token for term in terms]
    newest_written = -1  # the latest term with an accepted write so far
    highest: int | None = None
    writers: set[str] = set()
    for attempt in sorted(attempts, key=lambda a: a.seq):
        index = bisect.bisect_right(starts, attempt.token) - 1
        if index < 0 and not journal_complete:
            figures.unjudged += 1
            continue
        if index < 0 or terms[index].session != attempt.session:
            figures.foreign.append(attempt)
        if not attempt.accepted:
            figures.rejected += 1
            if highest is None or attempt.token >= highest:
                figures.wrongly_rejected.append(attempt)
            continue
        figures.accepted += 1
        writers.add(attempt.writer)
        highest = attempt.token if highest is None else max(highest, attempt.token)
        if index >= 0 and terms[index].ended_by(attempt.at):
            if newest_written > index:
                figures.stale_accepted.append(attempt)
            elif index + 1 < len(terms) and terms[index + 1].started <= attempt.at:
                figures.unfenced += 1
            else:
                figures.late += 1
        newest_written = max(newest_written, index)
    figures.writers = len(writers)
    return figures
