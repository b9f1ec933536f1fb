"""The acquirer: `?acquire` for a Candidate, and the leader's value kept in the key.

It campaigns only when the machine asks (`campaign`, on entering Candidate and on every
`retry_acquire`) and stops when it says so (`stand_down`). When Consul says no, it reads the
key with `?consistent` to learn why before anything else: another holder means we follow; no
holder means a lock-delay is in force (consul-semantics §2.3), reported as `lock_delayed` with
the time to wait, so the machine asks again on a timer instead of hot-looping.

`lock_acquired` is posted only when `?acquire` said true *and* the consistent read that
follows shows our session: never Leader without a confirmed lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consul_leader.adapters.consul.port import (
    ConsulDenied,
    ConsulError,
    ConsulPort,
    InvalidSession,
    TlsError,
    log_level,
)
from consul_leader.adapters.controller import Post
from consul_leader.adapters.election.key import LockHolder, fencing_token, observed
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings, lock_delay_wait

log = logging.getLogger("consul_leader.lock")


@dataclass(frozen=True)
class AcquirerSettings:
    kv_path: str
    holder: LockHolder
    timings: Timings


@dataclass
class _Campaign:
    session: str
    due: float


class Acquirer:
    def __init__(self, settings: AcquirerSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_attempt: Callable[[str], None] = lambda result: None) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self._on_attempt = on_attempt
        self.wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._campaign: _Campaign | None = None
        self._failures = 0
        self._delays = 0  # lock-delay refusals in a row
        self._rewrite_for: str | None = None
        self._stopping = False

    # -- instructions ---------------------------------------------------------------------

    def campaign(self, session: str, after: float = 0.0) -> None:
        """Try `?acquire` with `session`, `after` seconds from now."""
        with self._lock:
            self._campaign = _Campaign(session, self._clock() + after)
        self.wake()

    def stand_down(self) -> None:
        with self._lock:
            self._campaign = None
            self._failures = self._delays = 0

    def keep_value(self, session: str, observation: KeyObservation | None) -> None:
        """As leader: if someone overwrote the key's value, write ours back (with our own
        session, so LockIndex stays, §2.3)."""
        if observation is None or observation.value == self._settings.holder.value(session):
            return
        with self._lock:
            self._rewrite_for = session
        self.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._campaign = self._rewrite_for = None

    # -- the worker's step ----------------------------------------------------------------

    def step(self) -> float | None:
        with self._lock:
            rewrite, self._rewrite_for = self._rewrite_for, None
            campaign = self._campaign
        if rewrite is not None:
            self._rewrite(rewrite)
        if campaign is not None and self._clock() >= campaign.due:
            self._attempt(campaign)
        with self._lock:
            return None if self._campaign is None else self._campaign.due

    def _attempt(self, campaign: _Campaign) -> None:
        session, key = campaign.session, self._settings.kv_path
        timeout = self._timings.request_timeout
        try:
            acquired = self._port.kv_acquire(key, session, self._settings.holder.value(session),
                                             timeout=timeout)
            # Ownership is decided here, so ask the Raft leader what the key holds now.
            observation = self._port.kv_get(key, consistent=True, timeout=timeout).observation
        except InvalidSession:
            self._finish(campaign, "invalid_session")
            self._post(Event.SESSION_LOST, "acquire: Consul says the session is invalid",
                       Facts(session=session))
            return
        except ConsulError as exc:
            self._on_attempt("error")
            self._retry_later(campaign, exc)
            return
        if acquired and observation.session == session:
            self._finish(campaign, "acquired")
            self._post(Event.LOCK_ACQUIRED, "acquire answered true",
                       Facts(session=session, observation=observation,
                             fencing_token=fencing_token(observation)))
            return
        self._after_refusal(campaign, observation)

    def _after_refusal(self, campaign: _Campaign, observation: KeyObservation) -> None:
        event, reason, facts = observed(observation, campaign.session)
        if event is Event.KEY_MISSING:
            # Deleted between our acquire and our read: try again shortly.
            self._on_attempt("error")
            with self._lock:
                if self._campaign is campaign:
                    campaign.due = self._clock() + self._timings.min_watch_interval
            return
        if event is Event.LOCK_FREE:
            # No holder, yet Consul said no: a lock-delay is in force. Wait on a timer.
            with self._lock:
                retry_in = lock_delay_wait(self._timings.lock_delay, self._delays)
                self._delays += 1
            self._finish(campaign, "lock_delay", keep_delays=True)
            self._post(Event.LOCK_DELAYED, "acquire refused: lock-delay in force",
                       Facts(session=campaign.session, retry_in=retry_in))
            return
        self._finish(campaign, "held" if event is Event.LOCK_HELD_BY_OTHER else "acquired")
        self._post(event, reason, facts)

    def _finish(self, campaign: _Campaign, result: str, keep_delays: bool = False) -> None:
        """This campaign is over (the machine decides whether there is another)."""
        self._on_attempt(result)
        with self._lock:
            if self._campaign is campaign:
                self._campaign = None
            self._failures = 0
            if not keep_delays:
                self._delays = 0

    def _retry_later(self, campaign: _Campaign, exc: ConsulError) -> None:
        with self._lock:
            wait = self._timings.backoff(self._failures)
            if isinstance(exc, ConsulDenied | TlsError):
                wait = self._timings.retry_cap  # an operator must act: do not hammer
            self._failures += 1
            if self._campaign is campaign:
                campaign.due = self._clock() + wait
        log.log(log_level(exc), "acquire failed, retrying", extra={"error": str(exc),
                                                                  "retry_in": round(wait, 3)})

    def _rewrite(self, session: str) -> None:
        try:
            self._port.kv_acquire(self._settings.kv_path, session,
                                  self._settings.holder.value(session),
                                  timeout=self._timings.request_timeout)
        except ConsulError as exc:
            log.warning("could not write the lock value back", extra={"error": str(exc)})
