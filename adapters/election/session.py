"""Session keeper: creates, renews and gives up the Consul session, and owns the local lease.

Consul promises only that a session is not invalidated *before* its TTL (it may take up to
2 x TTL, consul-semantics §1.4). So the lease we act on is local: it lasts until the send
time of the last renew Consul confirmed, plus TTL, on the monotonic clock. When that
deadline passes without a confirmed renew, the keeper reports `lease_expired`, whether or not
Consul can be reached. A renew answered after the deadline (for example after SIGSTOP) does
not revive the lease.

What the keeper decides is only how to talk to Consul (when to renew, how long to wait before
retrying). It creates a session only when the machine asks (`create`), reports every outcome
as an event (`session_created`, `lease_renewed`, `session_lost`, `lease_expired`,
`bound_check_missing`, and `application_critical` when the health gate's alias check refused
it), and gives a session up when the machine says so (`give_up`): it then releases the key
with the holder's value and destroys the session in the background, until Consul has
certainly dropped it (2 x TTL after its last renew).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from consul_leader.adapters.consul.port import (
    CheckNotUsable,
    ConsulDenied,
    ConsulError,
    ConsulPort,
    ConsulRejected,
    SessionSpec,
    SettingRefused,
    TlsError,
    log_level,
)
from consul_leader.adapters.controller import Post
from consul_leader.adapters.election.key import LockHolder
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Lease, Timings, retry_delay

log = logging.getLogger("consul_leader.session")


class FatalConfigError(Exception):
    """Consul refused our configuration (a TTL below its session_ttl_min), or the
    configuration contradicts what Consul shows (a session node other than the checks')."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class KeeperSettings:
    """The keeper's own configuration."""

    session: SessionSpec  # its service checks come with each `create`
    kv_path: str  # the lock key, released with the holder's value when a session is given up
    holder: LockHolder
    timings: Timings
    # CONSUL_LEADER_NODE while health checks are on: it must be the local agent's node,
    # where the checks the session binds to live.
    node_to_verify: str | None = None
    # The health gate: the IDs of the alias checks the session binds to start with this. Such
    # a check critical at create is the application's health, not ours to register again.
    application_check_prefix: str | None = None


@dataclass
class _Abandoned:
    session: str
    dead_by: float  # after this Consul has certainly invalidated it: nothing left to clean
    retry_at: float = 0.0


class SessionKeeper:
    """Call `step()` from one worker thread; the other methods from any thread."""

    def __init__(
        self,
        settings: KeeperSettings,
        port: ConsulPort,
        post: Post,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_renewed: Callable[[float], None] = lambda seconds: None,
        on_renew_failed: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self._on_renewed = on_renewed
        self._on_renew_failed = on_renew_failed
        self.wake: Callable[[], None] = lambda: None  # the worker's poke, once it runs
        self._lock = threading.Lock()
        self._lease = Lease(ttl=self._timings.ttl)
        self._session: str | None = None
        self._want_session = False
        self._spec = settings.session
        self._create_not_before = 0.0
        self._create_failures = 0
        self._renew_due = 0.0
        self._renew_failures = 0
        self._last_renew_at: float | None = None
        self._node_verified = settings.node_to_verify is None
        self._abandoned: list[_Abandoned] = []
        self._stopping = False
        self.fatal: FatalConfigError | None = None

    # -- what the machine (through the effects) and the status endpoint ask ----------------

    def create(self, bound_checks: tuple[str, ...] = ()) -> None:
        """Create a session bound to `bound_checks` (besides serfHealth), unless there is one.
        Asked for in NoSession, once it is safe."""
        with self._lock:
            self._want_session = self._session is None
            self._spec = replace(self._settings.session, service_checks=bound_checks)
        self.wake()

    def cancel_create(self) -> None:
        """The machine no longer wants a session (the application went critical). A create
        already on its way is given up as soon as it is answered."""
        with self._lock:
            self._want_session = False

    def give_up(self, session: str | None) -> None:
        """Stop renewing `session`; release the key and destroy it in the background."""
        with self._lock:
            if session is not None and session == self._session:
                self._abandon_locked()
        self.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._want_session = False
        self.wake()

    def release_and_destroy(self, timeout: float) -> None:
        """Clean shutdown, after `stop()`: release the key first (no lock-delay for the next
        leader), then destroy the session. Errors are logged: the TTL takes care of the rest."""
        deadline = self._clock() + timeout
        with self._lock:
            self._abandon_locked()
            pending, self._abandoned = self._abandoned, []
        for item in pending:
            left = deadline - self._clock()
            if left <= 0:
                break
            try:
                self._release_and_destroy(item.session, left)
            except ConsulError as exc:
                log.error("could not release the lock or destroy the session",
                          extra={"session": item.session, "error": str(exc)})

    def lease_remaining(self) -> float | None:
        with self._lock:
            return None if self._session is None else self._lease.remaining(self._clock())

    def last_renew_age(self) -> float | None:
        with self._lock:
            return None if self._last_renew_at is None else self._clock() - self._last_renew_at

    # -- the worker's step ----------------------------------------------------------------

    def step(self) -> float | None:
        """Do what is due now; return when to be called again (None: when woken)."""
        with self._lock:
            if self._stopping or self.fatal is not None:
                return None
            session, now = self._session, self._clock()
            expired = session is not None and self._lease.expired(now)
            renew = session is not None and not expired and now >= self._renew_due
            create = session is None and self._want_session and now >= self._create_not_before
        if expired:
            assert session is not None
            self._lost(session, Event.LEASE_EXPIRED, "no renew confirmed before the lease deadline")
        elif renew:
            assert session is not None
            self._renew(session)
        elif create:
            self._create()
        self._clean_up_abandoned()
        return self._next_due()

    def _next_due(self) -> float | None:
        with self._lock:
            if self._stopping or self.fatal is not None:
                return None
            due: list[float] = [item.retry_at for item in self._abandoned]
            if self._session is not None:
                due += [self._renew_due, self._lease.deadline or self._clock()]
            elif self._want_session:
                due.append(self._create_not_before)
            return min(due) if due else None

    # -- create ---------------------------------------------------------------------------

    def _create(self) -> None:
        if not self._node_verified and not self._verify_node():
            return
        sent_at = self._clock()
        try:
            with self._lock:
                spec = self._spec
            session = self._port.session_create(spec, timeout=self._timings.request_timeout)
        except CheckNotUsable as exc:
            self._create_failed(want_again=False)
            if self._is_application_check(exc):
                log.warning("session create refused: the application is critical",
                            extra={"check": exc.check_id})
                self._post(Event.APPLICATION_CRITICAL, f"alias check {exc.check_id} is "
                           "critical", Facts(check_id=exc.check_id))
                return
            log.warning("session create refused: its lease check is not usable",
                        extra={"check": exc.check_id, "problem": exc.problem})
            self._post(Event.BOUND_CHECK_MISSING, f"lease check {exc.check_id} is {exc.problem}",
                       Facts(check_id=exc.check_id))
            return
        except SettingRefused as exc:
            self._fail(FatalConfigError(exc.variable, f"Consul refused it: {exc.body.strip()}"))
            return
        except ConsulError as exc:
            self._create_failed(want_again=True)
            self._log_failure("session create failed, retrying", exc)
            return
        self._adopt(session, sent_at)

    def _is_application_check(self, exc: CheckNotUsable) -> bool:
        prefix = self._settings.application_check_prefix
        return bool(prefix) and exc.problem == "critical" and exc.check_id.startswith(
            prefix or "")

    def _adopt(self, session: str, sent_at: float) -> None:
        with self._lock:
            if self._stopping or not self._want_session:
                self._abandoned.append(self._abandoned_entry(session, sent_at))
                return
            self._lease = Lease(ttl=self._timings.ttl)
            self._lease.confirm(sent_at, self._clock())
            self._session, self._want_session = session, False
            self._last_renew_at = sent_at
            self._renew_due = sent_at + self._timings.renew_interval
            self._create_failures = self._renew_failures = 0
            valid_until = self._lease.deadline
        log.info("session created", extra={"session": session})
        self._post(Event.SESSION_CREATED, "session created",
                   Facts(session=session, valid_until=valid_until))

    def _create_failed(self, *, want_again: bool) -> None:
        with self._lock:
            self._create_not_before = self._clock() + self._timings.backoff(self._create_failures)
            self._create_failures += 1
            self._want_session = self._want_session and want_again

    def _verify_node(self) -> bool:
        node = self._settings.node_to_verify
        try:
            local = self._port.agent_node_name(timeout=self._timings.request_timeout)
        except ConsulError as exc:
            self._create_failed(want_again=True)
            self._log_failure("cannot check CONSUL_LEADER_NODE against the local agent's node "
                              "(needs agent:read); retrying", exc)
            return False
        if local != node:
            self._fail(FatalConfigError(
                "CONSUL_LEADER_NODE", f"names node {node!r}, but the health checks the session "
                f"binds to live on the local agent's node {local!r}; unset it, or set "
                "CONSUL_LEADER_HEALTH_CHECK=false"))
            return False
        self._node_verified = True
        return True

    def _fail(self, error: FatalConfigError) -> None:
        self.fatal = error
        self._post(Event.SHUTDOWN, str(error))

    # -- renew ----------------------------------------------------------------------------

    def _renew(self, session: str) -> None:
        sent_at = self._clock()
        timeout = self._timings.request_timeout_within(self.lease_remaining())
        try:
            renewed = self._port.session_renew(session, timeout=timeout)
        except ConsulError as exc:
            self._on_renew_failed("denied" if isinstance(exc, ConsulDenied) else "unavailable")
            self._renew_failed(exc)
            return
        if not renewed:
            self._on_renew_failed("not_found")
            self._lost(session, Event.SESSION_LOST, "Consul no longer knows the session")
            return
        answered_at = self._clock()
        with self._lock:
            confirmed = self._session == session and self._lease.confirm(sent_at, answered_at)
            if confirmed:
                self._last_renew_at = sent_at
                self._renew_due = sent_at + self._timings.renew_interval
                self._renew_failures = 0
            valid_until = self._lease.deadline
        if not confirmed:
            self._lost(session, Event.LEASE_EXPIRED, "renew answered after the lease deadline")
            return
        self._on_renewed(answered_at - sent_at)
        self._post(Event.LEASE_RENEWED, "lease renewed",
                   Facts(session=session, valid_until=valid_until))

    def _renew_failed(self, exc: ConsulError) -> None:
        with self._lock:
            remaining = self._lease.remaining(self._clock())
            wait = retry_delay(self._renew_failures, remaining or self._timings.renew_interval,
                               base=self._timings.retry_cap / 8, cap=self._timings.retry_cap)
            if isinstance(exc, ConsulDenied | ConsulRejected | TlsError):
                # A permission or certificate problem is not fixed by hammering.
                wait = max(wait, self._timings.retry_cap)
            self._renew_failures += 1
            self._renew_due = self._clock() + wait
        self._log_failure("session renew failed, retrying", exc, retry_in=wait)

    def _lost(self, session: str, event: Event, reason: str) -> None:
        """The session is gone or can no longer be vouched for: stop renewing, report it."""
        with self._lock:
            if self._session != session:
                return
            self._abandon_locked()
        log.warning("session given up", extra={"session": session, "reason": reason})
        self._post(event, reason, Facts(session=session))

    def _abandon_locked(self) -> None:
        if self._session is None:
            return
        last = self._last_renew_at if self._last_renew_at is not None else self._clock()
        self._abandoned.append(self._abandoned_entry(self._session, last))
        self._session = None
        self._lease.clear()

    def _abandoned_entry(self, session: str, last_renew: float) -> _Abandoned:
        return _Abandoned(session, last_renew + self._timings.session_dead_after)

    # -- cleanup of sessions given up -----------------------------------------------------

    def _clean_up_abandoned(self) -> None:
        now = self._clock()
        with self._lock:
            due = [item for item in self._abandoned if item.retry_at <= now]
        for item in due:
            done = now >= item.dead_by
            if not done:
                try:
                    self._release_and_destroy(item.session, self._timings.request_timeout)
                    done = True
                except ConsulError as exc:
                    log.debug("cleanup of a session given up failed, retrying",
                              extra={"session": item.session, "error": str(exc)})
                    item.retry_at = self._clock() + self._timings.retry_cap
            if done:
                with self._lock:
                    if item in self._abandoned:
                        self._abandoned.remove(item)

    def _release_and_destroy(self, session: str, timeout: float) -> None:
        # An explicit release imposes no lock-delay on the next leader (consul-semantics
        # §1.5), and sends the holder's value: Consul writes the body into the key.
        self._port.kv_release(self._settings.kv_path, session,
                              self._settings.holder.value(session), timeout=timeout)
        self._port.session_destroy(session, timeout=timeout)

    def _log_failure(self, message: str, exc: ConsulError, **fields: object) -> None:
        log.log(log_level(exc), message, extra={"error": str(exc), **fields})
