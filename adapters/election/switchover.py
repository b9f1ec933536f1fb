"""Switchover: what `POST /switchover` asks of the leader, checked before anything moves.

`request()` runs in an HTTP thread. It refuses, with one line, a switchover this instance cannot
do: not the leader (409), a target that no other instance of the election is named (404), a
target that cannot lead now (409: not passing, or priority 0), or nobody at all who could take
over (503: no other passing instance with a priority above 0 in `health/service/<published
name>`). Otherwise it posts `switchover_requested` (the machine decides, fsm/table.py) with the
hold-off and the target as facts, and waits, a bounded time, for the key to be released:
200 with what was done, or 202 when the release is still under way.

Targets are named by instance (the allocation ID under Nomad), allocation ID, or the service ID
of the peer's registration, as its Meta says (adapters/peers.py); a unique prefix of at least
`MIN_PREFIX` characters of an instance or allocation ID names it too (Nomad prints 8).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consul_leader.adapters.consul.port import ConsulError, ConsulPort
from consul_leader.adapters.controller import Post
from consul_leader.adapters.durations import DurationError, format_duration, parse_duration
from consul_leader.adapters.peers import Peer, peers_of
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader.switchover")

MIN_PREFIX = 8


@dataclass(frozen=True)
class SwitchoverSettings:
    instance: str  # this instance, as peers name it
    peers: str  # the published service name, whose instances say who they are
    timings: Timings
    default_hold_off: float  # CONSUL_LEADER_SWITCHOVER_HOLD_OFF
    max_hold_off: float
    answer_within: float | None = None  # how long to wait for the release; None: derived

    @property
    def release_wait(self) -> float:
        """The hand-over is a few writes once the replica role shows: two requests' time."""
        if self.answer_within is not None:
            return self.answer_within
        return 2 * self.timings.request_timeout


@dataclass(frozen=True)
class Answer:
    """What the HTTP endpoint sends back: a JSON document, or one line."""

    status: int
    result: str  # the metrics label (adapters.observability.metrics.SWITCHOVER_RESULTS)
    message: str = ""
    document: dict[str, Any] | None = field(default=None)


class Switchover:
    def __init__(self, settings: SwitchoverSettings, port: ConsulPort, post: Post, *,
                 state: Callable[[], State],
                 on_result: Callable[[str], None] = lambda result: None) -> None:
        self._settings = settings
        self._port = port
        self._post = post
        self._state = state
        self._on_result = on_result
        self._cond = threading.Condition()
        self._busy = False
        self._releases = 0  # how many hand-overs have ended (wakes the waiting request)
        self._released = False

    def released(self, ok: bool) -> None:
        """The acquirer's hand-over ended: the key was released (`ok`) or was not ours."""
        with self._cond:
            self._releases += 1
            self._released = ok
            self._cond.notify_all()

    def request(self, to: str | None, hold_off_text: str | None) -> Answer:
        answer = self._answer(to, hold_off_text)
        self._on_result(answer.result)
        level = logging.WARNING if answer.status < 400 else logging.INFO
        log.log(level, "switchover request", extra={
            "status": answer.status, "result": answer.result, "to": to or "",
            "detail": answer.message})
        return answer

    def _answer(self, to: str | None, hold_off_text: str | None) -> Answer:
        hold_off = self._hold_off(hold_off_text)
        if isinstance(hold_off, Answer):
            return hold_off
        state = self._state()
        if state is not State.LEADER:
            return Answer(409, "refused", f"not the leader: this instance is {state.value}; "
                                          "send the switchover to the leader")
        if to == self._settings.instance:
            return Answer(409, "refused", f"{to} is this instance, the leader already")
        with self._cond:
            if self._busy:
                return Answer(409, "refused", "a switchover is already in progress")
            self._busy = True
        try:
            return self._switch(to, hold_off)
        finally:
            with self._cond:
                self._busy = False

    def _hold_off(self, text: str | None) -> float | Answer:
        if not text:
            return self._settings.default_hold_off
        try:
            seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
        except DurationError:
            return Answer(400, "invalid", f"hold_off={text!r} is not a duration (such as 5s)")
        limit = self._settings.max_hold_off
        if not 0 <= seconds <= limit:
            return Answer(400, "invalid", f"hold_off={text!r} must be between 0s and "
                                          f"{format_duration(limit)}")
        return seconds

    def _switch(self, to: str | None, hold_off: float) -> Answer:
        try:
            health = self._port.health_service(self._settings.peers,
                                               timeout=self._settings.timings.request_timeout)
        except ConsulError as exc:
            return Answer(503, "error", f"cannot list the candidates: {exc}")
        peers = peers_of(health.entries, self._settings.instance)
        target = self._target(to, peers) if to else None
        if isinstance(target, Answer):
            return target
        candidates = [p.instance for p in peers if p.may_lead]
        if not candidates:
            return Answer(503, "refused", f"no healthy candidate: no other passing instance of "
                                          f"{self._settings.peers} with a priority above 0")
        with self._cond:
            seen = self._releases
        self._post(Event.SWITCHOVER_REQUESTED, "switchover requested over HTTP",
                   Facts(hold_off=hold_off, target=target.instance if target else None))
        return self._outcome(seen, target, hold_off, candidates)

    def _target(self, to: str, peers: list[Peer]) -> Peer | Answer:
        named = [p for p in peers if p.named(to)] or [
            p for p in peers if len(to) >= MIN_PREFIX
            and (p.instance.startswith(to) or (p.alloc or "").startswith(to))]
        if len({p.instance for p in named}) != 1:
            what = "names several instances" if named else "is not an instance"
            return Answer(404, "refused", f"unknown target {to!r}: it {what} of "
                                          f"{self._settings.peers}")
        target = named[0]
        if not target.may_lead:
            why = "it has priority 0" if target.passing else "it is not passing its checks"
            return Answer(409, "refused", f"target {to!r} cannot lead now: {why}")
        return target

    def _outcome(self, seen: int, target: Peer | None, hold_off: float,
                 candidates: list[str]) -> Answer:
        deadline = time.monotonic() + self._settings.release_wait
        with self._cond:
            while self._releases == seen and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            ended, released = self._releases != seen, self._released
        document = {"from": self._settings.instance,
                    "to": target.instance if target else None,
                    "hold_off": hold_off, "candidates": sorted(candidates)}
        if ended and released:
            return Answer(200, "released", document={"switchover": "released", **document})
        if ended:
            return Answer(409, "refused", "the lock was no longer ours: nothing to hand over")
        # Still under way (Consul slow to show the replica role), or overtaken by another event:
        # the state says which.
        return Answer(202, "initiated", document={"switchover": "initiated",
                                                  "state": self._state().value, **document})
