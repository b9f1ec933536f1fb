"""The lock watcher: what the lock key holds, as soon as it changes, as events.

A blocking GET returns within a round trip of a release, a deletion or a session invalidation
(consul-semantics §3); each answer is classified against the session the machine acts on
(`follow`) and posted with the observation as its fact. A leader asks, after each renew,
whether the key is still held by its session (`confirm`): the watch answers at once when the
key changes, but a slow or stuck watch would go on vouching for a key we lost, so when nothing
has shown the key ours for `max_age`, the key is read with `?consistent`.

Two steps, each for a worker of its own: `watch_step` (which blocks) and `confirm_step`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consul_leader.adapters.consul.port import ConsulError, ConsulPort, log_level
from consul_leader.adapters.controller import Post
from consul_leader.adapters.election.key import next_index, observed
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader.lock")

QUIET_FAILURES = 3  # a watch that fails now and then is routine: say so only when it persists


@dataclass(frozen=True)
class WatcherSettings:
    kv_path: str
    timings: Timings


class LockWatcher:
    def __init__(self, settings: WatcherSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self.wake_confirm: Callable[[], None] = lambda: None  # the confirm worker's poke
        self._lock = threading.Lock()
        self._following: str | None = None
        self._last: KeyObservation | None = None
        self._held_by: str | None = None  # holder in the latest observation, and when seen
        self._held_seen_at = float("-inf")
        self._index = 0
        self._watch_reports = 0  # answers of the blocking watch reported so far
        self._watch_failures = 0
        self._confirm_for: str | None = None
        self._confirm_failures = 0
        self._stopping = False

    @property
    def last(self) -> KeyObservation | None:
        with self._lock:
            return self._last

    # -- instructions ---------------------------------------------------------------------

    def follow(self, session: str | None) -> None:
        """Classify what the key holds against `session` (None: report nothing)."""
        with self._lock:
            self._following = session
            if self._confirm_for != session:
                self._confirm_for = None

    def confirm(self, session: str, max_age: float) -> None:
        """Post whether `session` still holds the key, seen within the last `max_age`."""
        with self._lock:
            fresh = (self._held_by == session and self._last is not None
                     and self._clock() - self._held_seen_at <= max_age)
            last = self._last
            if not fresh:
                self._confirm_for, self._confirm_failures = session, 0
        if fresh and last is not None:
            event, reason, facts = observed(last, session)
            self._post(event, f"{reason} (seen within {max_age:g}s)", facts)
        else:
            self.wake_confirm()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True

    # -- the blocking watch ---------------------------------------------------------------

    def watch_step(self) -> float | None:
        """One blocking read of the key; returns when to start the next one."""
        with self._lock:
            if self._stopping:
                return None
            index = self._index
        started = self._clock()
        timings = self._timings
        try:
            read = self._port.kv_get(
                self._settings.kv_path, index=index, wait=timings.watch_wait_text,
                timeout=timings.watch_timeout if index else timings.request_timeout)
        except ConsulError as exc:
            return self._watch_failed(exc)
        with self._lock:
            self._watch_failures = 0
            self._index = next_index(index, read.index)
            self._watch_reports += 1
        self._report(read.observation, None)
        # Consul's advice for blocking loops: never more often than a rate limit, even when
        # an answer comes back at once (an index that does not move, a proxy that lies).
        return started + timings.min_watch_interval

    def _watch_failed(self, exc: ConsulError) -> float:
        with self._lock:
            self._index = 0
            self._watch_failures += 1
            failures = self._watch_failures
        level = log_level(exc)
        if level == logging.WARNING and failures < QUIET_FAILURES:
            level = logging.DEBUG
        log.log(level, "lock watch failed", extra={"error": str(exc)})
        return self._clock() + self._timings.backoff(failures)

    # -- confirmations --------------------------------------------------------------------

    def confirm_step(self) -> float | None:
        """Read the key with ?consistent for a pending `confirm`; retry until it works."""
        with self._lock:
            session = None if self._stopping else self._confirm_for
            reports_before = self._watch_reports
        if session is None:
            return None
        try:
            read = self._port.kv_get(self._settings.kv_path, consistent=True,
                                     timeout=self._timings.request_timeout)
        except ConsulError as exc:
            with self._lock:
                self._confirm_failures += 1
                failures = self._confirm_failures
            log.log(log_level(exc), "cannot confirm the lock, retrying", extra={"error": str(exc)})
            return self._clock() + self._timings.backoff(failures)
        with self._lock:
            if self._confirm_for == session:
                self._confirm_for = None
            overtaken = (self._watch_reports != reports_before and self._last is not None
                         and not _same_holding(self._last, read.observation))
        if overtaken:
            # The watch reported another holding while this read was on its way: this answer
            # may be the older one, and posting it last would undo what the watch reported
            # (a candidate back to Leader with its old token). The watch's answer stands.
            log.debug("lock confirmation overtaken by the watch, dropped",
                      extra={"holder": read.observation.session or ""})
            return None
        self._report(read.observation, session)
        return None

    def _report(self, observation: KeyObservation, session: str | None) -> None:
        with self._lock:
            self._last = observation
            self._held_by = observation.session
            self._held_seen_at = self._clock()
            session = session or self._following
        if session is not None:
            self._post(*observed(observation, session))


def _same_holding(a: KeyObservation, b: KeyObservation) -> bool:
    return (a.exists, a.session) == (b.exists, b.session)
