"""The acquirer: `?acquire` for a Candidate, and the leader's value kept in the key.

It campaigns only when the machine asks (`campaign`, on entering Candidate and on every
`retry_acquire`) and stops when it says so (`stand_down`). When Consul says no, it reads the
key with `?consistent` to learn why before anything else: another holder means we follow; no
holder means a lock-delay is in force (consul-semantics §2.3), reported as `lock_delayed` with
the time to wait, so the machine asks again on a timer instead of hot-looping.

`lock_acquired` is posted only when `?acquire` said true *and* the consistent read that
follows shows our session: never Leader without a confirmed lock.

Switchover and priorities (issue 12). Before each campaign's `?acquire` it reports, instead of
acquiring, what keeps this instance out for now: priority 0 (never leads), its own hold-off after
handing over, or a fresh switchover hint naming another instance (`lead_excluded`, then
`hold_off_over` when that ends); and, once per campaign, healthy peers of higher priority in the
catalog (`higher_priority_seen`, with a delay of `Timings.priority_delay`). A hint naming this
instance skips that delay. When the machine hands the lock over (`hand_over`), it writes the hint
and then releases the key, keeping its value. Read failures never keep it out of the race.
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
from consul_leader.adapters.election.key import Hint, LockHolder, fencing_token, observed
from consul_leader.adapters.peers import higher_priority, peers_of
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings, lock_delay_wait

log = logging.getLogger("consul_leader.lock")

HINTS_REMEMBERED = 8  # switchover hints whose first sighting is kept (only the latest matters)


@dataclass(frozen=True)
class AcquirerSettings:
    kv_path: str
    holder: LockHolder
    timings: Timings
    # Switchover and priorities (issue 12).
    priority: int = 1
    instance: str = ""  # how peers and hints name this instance
    peers: str | None = None  # the published name whose instances say their priority
    hint_key: str | None = None  # where switchover hints are written and read


@dataclass
class _Campaign:
    session: str
    due: float


@dataclass(frozen=True)
class _Handover:
    session: str
    target: str | None
    hold_off: float


@dataclass
class _Exclusion:
    session: str
    until: float | None  # None: for good (priority 0)
    reason: str


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
        # Switchover and priorities (issue 12).
        self.on_released: Callable[[bool], None] = lambda released: None
        self._hold_off_until = float("-inf")
        self._handover: _Handover | None = None
        self._handover_due = 0.0
        self._exclusion: _Exclusion | None = None
        self._deferred_for: str | None = None  # the session whose campaign waited for peers
        self._hints_seen: dict[int, float] = {}  # a hint's ModifyIndex -> when first seen

    # -- instructions ---------------------------------------------------------------------

    def campaign(self, session: str, after: float = 0.0) -> None:
        """Try `?acquire` with `session`, `after` seconds from now."""
        with self._lock:
            self._campaign = _Campaign(session, self._clock() + after)
            if after <= 0:
                self._deferred_for = None  # the key changed: peers may have, too
        self.wake()

    def stand_down(self) -> None:
        with self._lock:
            self._campaign = None
            self._failures = self._delays = 0
            self._deferred_for = None

    def hold_off(self, until: float) -> None:
        """Stay out of the race until `until` (a switchover handed the lock over)."""
        with self._lock:
            self._hold_off_until = until
        self.wake()

    def hand_over(self, session: str, target: str | None, hold_off: float) -> None:
        """Write the switchover hint, then release the key that `session` holds."""
        with self._lock:
            self._handover = _Handover(session, target, hold_off)
            self._handover_due = self._clock()
        self.wake()

    def exclusion(self) -> dict[str, object] | None:
        """What keeps this instance out of the race now (for /status), if anything."""
        with self._lock:
            excluded, now, hold_off_until = self._exclusion, self._clock(), self._hold_off_until
        if excluded is not None:
            left = None if excluded.until is None else round(max(0.0, excluded.until - now), 3)
            return {"reason": excluded.reason, "remaining": left}
        if now < hold_off_until:
            return {"reason": "holding off after a switchover",
                    "remaining": round(hold_off_until - now, 3)}
        return None

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
            self._handover = None  # shutdown releases the key itself (the session keeper)

    # -- the worker's step ----------------------------------------------------------------

    def step(self) -> float | None:
        with self._lock:
            rewrite, self._rewrite_for = self._rewrite_for, None
            campaign = self._campaign
            handover = self._handover if self._clock() >= self._handover_due else None
        if handover is not None:
            self._hand_over(handover)
        if rewrite is not None:
            self._rewrite(rewrite)
        if campaign is not None and self._clock() >= campaign.due:
            self._attempt(campaign)
        self._end_exclusion()
        return self._next_due()

    def _next_due(self) -> float | None:
        with self._lock:
            due = [] if self._campaign is None else [self._campaign.due]
            if self._handover is not None:
                due.append(self._handover_due)
            if self._exclusion is not None and self._exclusion.until is not None:
                due.append(self._exclusion.until)
            return min(due) if due else None

    def _attempt(self, campaign: _Campaign) -> None:
        if not self._may_compete(campaign):
            return
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

    # -- switchover and priorities (issue 12) ----------------------------------------------

    def _may_compete(self, campaign: _Campaign) -> bool:
        """Whether to `?acquire` now; when not, the reason was posted."""
        if self._settings.priority == 0:
            return self._exclude(campaign, None, "priority 0: this instance never leads")
        now = self._clock()
        with self._lock:
            hold_off_until = self._hold_off_until
            deferred = self._deferred_for == campaign.session
        hint, expires = self._fresh_hint(now)
        if hint is not None and hint.target == self._settings.instance:
            return True  # named by the operator: no hold-off, no priority delay
        if now < hold_off_until:
            return self._exclude(campaign, hold_off_until, "holding off after a switchover")
        if hint is not None and hint.target is not None:
            return self._exclude(campaign, expires, f"a switchover hands over to {hint.target}")
        if deferred:
            return True
        return not self._defer_for_peers(campaign, hint.source if hint else None)

    def _exclude(self, campaign: _Campaign, until: float | None, reason: str) -> bool:
        with self._lock:
            if self._campaign is campaign:
                self._campaign = None
            self._exclusion = _Exclusion(campaign.session, until, reason)
        retry_in = None if until is None else max(0.0, until - self._clock())
        self._post(Event.LEAD_EXCLUDED, reason, Facts(session=campaign.session, retry_in=retry_in))
        return False

    def _end_exclusion(self) -> None:
        with self._lock:
            excluded = self._exclusion
            over = excluded is not None and excluded.until is not None \
                and self._clock() >= excluded.until
            if over:
                self._exclusion = None
        if over and excluded is not None:
            self._post(Event.HOLD_OFF_OVER, f"over: {excluded.reason}",
                       Facts(session=excluded.session))

    def _fresh_hint(self, now: float) -> tuple[Hint | None, float | None]:
        """The switchover hint, with when it stops applying here, if it applies now."""
        hint_key = self._settings.hint_key
        if hint_key is None:
            return None, None
        timeout = self._timings.request_timeout
        try:
            read = self._port.kv_get(hint_key, timeout=timeout).observation
            hint = Hint.decode(read.value) if read.exists else None
            if hint is None:
                return None, None
            lock = self._port.kv_get(self._settings.kv_path, timeout=timeout).observation
        except ConsulError as exc:
            log.debug("cannot read the switchover hint; competing", extra={"error": str(exc)})
            return None, None
        if lock.lock_index != hint.lock_index:
            return None, None  # someone acquired the lock since: the hint is spent
        with self._lock:
            first_seen = self._hints_seen.setdefault(read.modify_index, now)
            for stale in sorted(self._hints_seen)[:-HINTS_REMEMBERED]:
                del self._hints_seen[stale]
        expires = first_seen + hint.hold_off
        return (hint, expires) if now < expires else (None, None)

    def _defer_for_peers(self, campaign: _Campaign, away: str | None) -> bool:
        """Post `higher_priority_seen` when healthy peers outrank us; True if it did."""
        peers_name = self._settings.peers
        if peers_name is None:
            return False
        try:
            health = self._port.health_service(peers_name,
                                               timeout=self._timings.request_timeout)
        except ConsulError as exc:
            log.debug("cannot read the peers' priorities; competing", extra={"error": str(exc)})
            return False
        higher = higher_priority(peers_of(health.entries, self._settings.instance),
                                 self._settings.priority, away)
        if not higher:
            return False
        delay = self._timings.priority_delay(len(higher))
        with self._lock:
            if self._campaign is campaign:
                self._campaign = None
            self._deferred_for = campaign.session
        self._post(Event.HIGHER_PRIORITY_SEEN,
                   f"{len(higher)} healthy peer(s) of higher priority may go first",
                   Facts(session=campaign.session, retry_in=delay, others=tuple(higher)))
        return True

    def _hand_over(self, handover: _Handover) -> None:
        settings, timeout = self._settings, self._timings.request_timeout
        session = handover.session
        try:
            lock = self._port.kv_get(settings.kv_path, consistent=True, timeout=timeout)
            if lock.observation.session != session:
                log.warning("switchover: the lock is no longer ours; nothing to hand over")
                self._handed_over(False)
                return
            if settings.hint_key is not None:
                hint = Hint(settings.instance, handover.target, handover.hold_off,
                            lock.observation.lock_index)
                self._port.kv_put(settings.hint_key, hint.encode(), timeout=timeout)
            released = self._port.kv_release(settings.kv_path, session,
                                             settings.holder.value(session), timeout=timeout)
        except ConsulError as exc:
            with self._lock:
                if self._handover is handover:
                    self._handover_due = self._clock() + self._timings.backoff(self._failures)
            log.log(log_level(exc), "switchover: releasing the lock failed, retrying",
                    extra={"error": str(exc)})
            return
        log.warning("switchover: lock released", extra={"to": handover.target or "",
                                                        "hold_off": handover.hold_off})
        self._handed_over(released)

    def _handed_over(self, released: bool) -> None:
        with self._lock:
            self._handover = None
        self.on_released(released)
