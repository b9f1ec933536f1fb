"""The controller: one thread, one queue, the only caller of the state machine, and the owner
of the current session.

Adapters observe Consul in their own threads and `post` what they saw, with the facts they
observed. Each event is about a session: the one named in its facts, or else the current
one. An event about a session that is no longer current raced with a session change and is
dropped (counted in the debug log only). The session becomes current when the machine accepts
its `session_created`, and stops being current when the machine reaches NoSession.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consul_leader.fsm.facts import NO_FACTS, Facts
from consul_leader.fsm.machine import LeaderMachine
from consul_leader.fsm.states import Event, State

log = logging.getLogger("consul_leader.controller")


class Post(Protocol):
    """How an adapter reports what it observed (`Controller.post`). Never blocks."""

    def __call__(self, event: Event, reason: str = "", facts: Facts = NO_FACTS) -> None: ...


@dataclass(frozen=True)
class Posted:
    event: Event
    reason: str
    facts: Facts


class Controller:
    def __init__(self, *, heartbeat_period: float, wedged_after: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._queue: queue.Queue[Posted] = queue.Queue()
        self._heartbeat_period = heartbeat_period
        self._wedged_after = wedged_after
        self._clock = clock
        self._wall_clock = wall_clock
        self._beat = clock()
        self._session: str | None = None
        # The state and when it was entered, updated together once each event is handled, so
        # a reader never sees the new state with the old time.
        self._shown: tuple[State, float] = (State.NO_SESSION, wall_clock())
        self._machine: LeaderMachine | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)

    def attach(self, machine: LeaderMachine) -> None:
        """The machine's effects need `post`, so the machine comes after the controller."""
        self._machine = machine

    @property
    def machine(self) -> LeaderMachine:
        if self._machine is None:
            raise RuntimeError("no machine attached")
        return self._machine

    # -- called from any thread -----------------------------------------------------------

    def post(self, event: Event, reason: str = "", facts: Facts = NO_FACTS) -> None:
        self._queue.put(Posted(event, reason, facts))

    @property
    def state(self) -> State:
        return self.machine.state

    def shown(self) -> tuple[State, float]:
        """(state, wall-clock time it was entered), consistent with each other."""
        return self._shown

    @property
    def since(self) -> float:
        return self._shown[1]

    @property
    def session(self) -> str | None:
        """The session the machine currently acts on (None in NoSession)."""
        return self._session

    def loop_alive(self) -> bool:
        return self._clock() - self._beat < self._wedged_after

    def start(self) -> None:
        self._thread.start()

    def finished(self, timeout: float) -> bool:
        """Wait until the loop has handled shutdown and stopped."""
        return self._done.wait(timeout)

    def run_pending(self) -> int:
        """Handle every event queued so far, in this thread (tests drive the loop this way).
        Returns how many were taken from the queue."""
        handled = 0
        while True:
            try:
                posted = self._queue.get_nowait()
            except queue.Empty:
                return handled
            self.handle(posted)
            handled += 1

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    posted = self._queue.get(timeout=self._heartbeat_period)
                except queue.Empty:
                    self._beat = self._clock()
                    continue
                self._beat = self._clock()
                self.handle(posted)
                if self.machine.stopping:
                    return
        finally:
            self._done.set()

    def handle(self, posted: Posted) -> None:
        """Fire one posted event on the machine, unless it is about a stale session."""
        facts = self._facts_of(posted)
        if facts is None:
            log.debug("stale event dropped", extra={"event": posted.event.value,
                                                     "session": posted.facts.session})
            return
        before = self.machine.state
        try:
            self.machine.handle(posted.event, posted.reason, facts)
        except Exception:  # an effect must never kill the only thread that moves the machine
            log.exception("effect failed", extra={"event": posted.event.value})
        if self.machine.state is State.NO_SESSION:
            self._session = None
        after = self.machine.state
        if after is not before:
            self._shown = (after, self._wall_clock())

    def _facts_of(self, posted: Posted) -> Facts | None:
        """The facts to fire `posted` with, naming its session; None when it is stale."""
        facts = posted.facts
        if posted.event is Event.SESSION_CREATED:
            if self.machine.may(posted.event):
                self._session = facts.session  # current before the effects of its entry run
            return facts
        if facts.session is not None and facts.session != self._session:
            return None
        return facts.with_session(self._session)
