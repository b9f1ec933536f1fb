"""The controller: one thread, one queue, the only caller of the state machine.

Adapters observe Consul in their own threads and `post` what they saw. Each posted event
names the session it was observed with; an event about a session that is no longer the
machine's current one is stale (it raced with a session change) and is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consul_leader.fsm.machine import LeaderMachine
from consul_leader.fsm.states import Event, State

log = logging.getLogger("consul_leader.controller")

HEARTBEAT_PERIOD = 1.0
WEDGED_AFTER = 10.0  # the loop is considered wedged when its heartbeat is older than this


@dataclass(frozen=True)
class Posted:
    event: Event
    reason: str
    session: str | None
    facts: Mapping[str, Any] = field(default_factory=dict)


class Controller:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.Queue[Posted | None] = queue.Queue()
        self._clock = clock
        self._beat = clock()
        self._session: str | None = None
        self.current: Posted | None = None  # the event being handled, for the effects
        self.since = time.time()
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

    def post(self, event: Event, reason: str = "", session: str | None = None,
             **facts: Any) -> None:
        self._queue.put(Posted(event, reason, session, facts))

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def session(self) -> str | None:
        return self._session

    def loop_alive(self) -> bool:
        return self._clock() - self._beat < WEDGED_AFTER

    def start(self) -> None:
        self._thread.start()

    def finished(self, timeout: float) -> bool:
        """Wait until the loop has handled shutdown and stopped."""
        return self._done.wait(timeout)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    posted = self._queue.get(timeout=HEARTBEAT_PERIOD)
                except queue.Empty:
                    posted = None
                self._beat = self._clock()
                if posted is None:
                    continue
                self._handle(posted)
                if self.machine.stopping:
                    return
        finally:
            self._done.set()

    def _handle(self, posted: Posted) -> None:
        if self._is_stale(posted):
            log.debug("stale event dropped", extra={"event": posted.event.value,
                                                     "session": posted.session})
            return
        self.current = posted
        before = self.machine.state
        try:
            self.machine.handle(posted.event, posted.reason)
        except Exception:  # an effect must never kill the only thread that moves the machine
            log.exception("effect failed", extra={"event": posted.event.value})
        finally:
            self.current = None
        if self.machine.state is not before:
            self.since = time.time()

    def _is_stale(self, posted: Posted) -> bool:
        if posted.event is Event.SESSION_CREATED:
            if self.machine.may(posted.event):
                self._session = posted.session
            return False
        return posted.session is not None and posted.session != self._session

    def forget_session(self) -> None:
        """Called on entering NoSession: later events about the old session are stale."""
        self._session = None
