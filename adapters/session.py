"""Session keeper: creates, renews and gives up the Consul session, and owns the local lease.

Consul promises only that a session is not invalidated *before* its TTL (it may take up to
2 x TTL, consul-semantics §1.4). So the lease we act on is local: it lasts until the send
time of the last renew Consul confirmed, plus TTL, on the monotonic clock. When that
deadline passes without a confirmed renew we stop claiming anything, whether or not Consul
can be reached. A renew answered after the deadline (for example after SIGSTOP) does not
revive the lease: the session is given up and a new one is made.

Health checks are passed only right after a confirmed renew, while the lease holds, so a
paused or wedged sidecar's checks expire and its session (bound to the lease check) is
invalidated by Consul at TTL instead of 2 x TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consul_leader.adapters.checks import HealthChecks
from consul_leader.adapters.config import Config
from consul_leader.adapters.consul import (
    MALFORMED,
    ConsulClient,
    ConsulDenied,
    ConsulError,
    ConsulRejected,
    TlsError,
    log_level,
)
from consul_leader.adapters.threads import start_worker
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Lease, retry_delay

log = logging.getLogger("consul_leader.session")

# Consul's session TTL timer; after this long without a renew the session is certainly gone.
SESSION_TTL_MULTIPLIER = 2

Post = Callable[..., None]


class FatalConfigError(Exception):
    """Consul refused our configuration (for example a TTL below its session_ttl_min)."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass
class _Abandoned:
    session: str
    dead_by: float  # monotonic instant after which Consul has certainly invalidated it


class SessionKeeper:
    """One thread. Talks to /v1/session/*; posts session_created, session_lost, lease_expired."""

    def __init__(
        self,
        config: Config,
        client: ConsulClient,
        post: Post,
        checks: HealthChecks,
        *,
        untag_confirmed: Callable[[], bool],
        confirm_role: Callable[[str, float], bool] = lambda session, timeout: True,
        on_renewed: Callable[[float], None] = lambda seconds: None,
        on_renew_failed: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client
        self._post = post
        self._checks = checks
        self._untag_confirmed = untag_confirmed
        self._confirm_role = confirm_role
        self._on_renewed = on_renewed
        self._on_renew_failed = on_renew_failed
        self._clock = clock
        self._lock = threading.Condition()
        self._lease = Lease(ttl=config.ttl)
        self._session: str | None = None
        self._want_session = True
        self._abandoned: list[_Abandoned] = []
        self._stopping = False
        self._fatal: FatalConfigError | None = None
        self._last_renew_at: float | None = None
        self._next_renew_at = 0.0
        self._thread: threading.Thread | None = None

    # -- what other threads may ask -------------------------------------------------------

    @property
    def session(self) -> str | None:
        with self._lock:
            return self._session

    @property
    def fatal(self) -> FatalConfigError | None:
        return self._fatal

    def lease_valid(self) -> bool:
        with self._lock:
            return self._session is not None and not self._lease.expired(self._clock())

    def lease_remaining(self) -> float | None:
        with self._lock:
            return None if self._session is None else self._lease.remaining(self._clock())

    def last_renew_age(self) -> float | None:
        with self._lock:
            return None if self._last_renew_at is None else self._clock() - self._last_renew_at

    def start(self) -> None:
        self._checks.start_passer(self.lease_valid)
        self._thread = start_worker("session-keeper", self._run, lambda: self._stopping)

    def want_session(self) -> None:
        """Give up the current session (if any) and make a new one when it is safe."""
        with self._lock:
            self._abandon_locked()
            self._want_session = True
            self._lock.notify_all()

    def drop(self, reason: str) -> None:
        """Give the current session up on purpose (we cannot publish what it would claim)."""
        session = self.session
        if session is not None:
            self._give_up(session, Event.SESSION_LOST, reason)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._want_session = False
            self._lock.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def release_and_destroy(self, kv_path: str, timeout: float) -> None:
        """Clean shutdown: release the key first (no lock-delay for the next leader), then
        destroy the session. Errors are logged: Consul's TTL takes care of what is left."""
        with self._lock:
            self._abandon_locked()
            pending = list(self._abandoned)
            self._abandoned.clear()
        for item in pending:
            try:
                self._release_key(item.session, kv_path, timeout)
                self._destroy(item.session, timeout)
            except (ConsulError, *MALFORMED) as exc:
                log.error("could not release the lock or destroy the session",
                          extra={"session": item.session, "error": str(exc)})

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._lock:
                if self._stopping:
                    return
                delay = self._next_wait_locked()
                if delay > 0:
                    self._lock.wait(delay)
                    continue
                session = self._session
            try:
                self._cleanup_abandoned()
                if session is None:
                    self._create_session()
                else:
                    self._renew(session)
                attempt = 0
            except FatalConfigError as exc:
                self._fatal = exc
                self._post(Event.SHUTDOWN, reason=str(exc))
                return
            except (ConsulError, *MALFORMED) as exc:
                attempt += 1
                self._back_off(exc, attempt)

    def _next_wait_locked(self) -> float:
        now = self._clock()
        if self._session is None:
            if not self._want_session:
                return 1.0
            return max(0.0, self._next_renew_at - now)
        if self._lease.expired(now):
            return 0.0
        return max(0.0, min(self._next_renew_at, self._lease.deadline or now) - now)

    def _back_off(self, exc: Exception, attempt: int) -> None:
        remaining = self.lease_remaining()
        wait = retry_delay(attempt, remaining if remaining else self._config.renew_interval)
        if isinstance(exc, ConsulDenied | ConsulRejected | TlsError):
            wait = max(wait, 1.0)  # a permission or certificate problem is not fixed by hammering
        log.log(log_level(exc), "session request failed, retrying",
                extra={"error": str(exc), "retry_in": round(wait, 3)})
        with self._lock:
            self._next_renew_at = self._clock() + wait

    # -- create ---------------------------------------------------------------------------

    def _create_session(self) -> None:
        if not self._untag_confirmed():
            # Never pass our checks or take a session while a stale primary label may remain.
            with self._lock:
                self._next_renew_at = self._clock() + 0.05
            return
        self._checks.ensure_registered()
        self._checks.pass_all("session being created", gate=self._untag_confirmed)
        sent_at = self._clock()
        body = self._session_body()
        try:
            reply = self._client.call(
                "PUT", "/v1/session/create", json_body=body, timeout=self._request_timeout()
            )
        except ConsulError as exc:
            self._raise_if_fatal(exc)
            raise
        answer = reply.json()
        session = answer.get("ID") if isinstance(answer, dict) else None
        if not isinstance(session, str) or not session:
            raise ValueError("session create answer has no ID")
        with self._lock:
            if self._stopping or not self._want_session:
                self._abandoned.append(_Abandoned(session, sent_at + 2 * self._config.ttl))
                return
            self._lease = Lease(ttl=self._config.ttl)
            self._lease.confirm(sent_at, self._clock())
            self._session = session
            self._want_session = False
            self._last_renew_at = sent_at
            self._next_renew_at = sent_at + self._config.renew_interval
        log.info("session created", extra={"session": session})
        self._post(Event.SESSION_CREATED, reason="session created", session=session)

    def _session_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "Name": self._config.session_name,
            "TTL": self._config.ttl_text,
            "LockDelay": self._config.lock_delay_text,
            "Behavior": "release",
            "NodeChecks": ["serfHealth"],
        }
        lease_check = self._checks.lease_check_id
        if lease_check is not None:
            body["ServiceChecks"] = [{"ID": lease_check}]
        if self._config.node_name:
            body["Node"] = self._config.node_name
        return body

    def _raise_if_fatal(self, exc: ConsulError) -> None:
        body = exc.body or ""
        if "Invalid Session TTL" in body:
            raise FatalConfigError("CONSUL_LEADER_TTL", f"Consul refused the TTL: {body.strip()}")
        if "Invalid Behavior" in body or "LockDelay" in body:
            raise FatalConfigError("CONSUL_LEADER_LOCKDELAY", f"Consul refused: {body.strip()}")

    # -- renew ----------------------------------------------------------------------------

    def _renew(self, session: str) -> None:
        now = self._clock()
        with self._lock:
            expired = self._lease.expired(now)
        if expired:
            self._give_up(session, Event.LEASE_EXPIRED,
                          "no renew confirmed before the lease deadline")
            return
        sent_at = now
        try:
            reply = self._client.call(
                "PUT",
                f"/v1/session/renew/{session}",
                timeout=self._request_timeout(),
                allow=(404,),
            )
        except ConsulError as exc:
            self._on_renew_failed("denied" if isinstance(exc, ConsulDenied) else "unavailable")
            raise
        if reply.status == 404:
            self._on_renew_failed("not_found")
            self._give_up(session, Event.SESSION_LOST, "Consul no longer knows the session")
            return
        if not _renewed(reply.json(), session):
            # An answer we cannot read as "renewed" confirms nothing (§1.3: `[session]`).
            self._on_renew_failed("unavailable")
            raise ValueError("renew answer does not describe our session")
        answered_at = self._clock()
        with self._lock:
            confirmed = self._session == session and self._lease.confirm(sent_at, answered_at)
            if confirmed:
                self._last_renew_at = sent_at
                self._next_renew_at = sent_at + self._config.renew_interval
        if not confirmed:
            self._give_up(session, Event.LEASE_EXPIRED, "renew answered after the lease deadline")
            return
        self._on_renewed(answered_at - sent_at)
        # A leader vouches for its primary label only when it has just seen the key held by
        # its own session; if Consul cannot say, retry like a failed renew (within the lease).
        try:
            roles = self._confirm_role(session, self._request_timeout())
        except (ConsulError, *MALFORMED):
            self._checks.request_round("lease renewed; role unconfirmed", roles=False)
            raise
        self._checks.request_round("lease renewed", roles=roles)

    def _give_up(self, session: str, event: Event, reason: str) -> None:
        with self._lock:
            if self._session != session:
                return
            self._abandon_locked()
            self._want_session = False  # the controller asks again once it has stepped down
        log.warning("session given up", extra={"session": session, "reason": reason})
        self._post(event, reason=reason, session=session)

    def _abandon_locked(self) -> None:
        if self._session is None:
            return
        last = self._last_renew_at if self._last_renew_at is not None else self._clock()
        self._abandoned.append(
            _Abandoned(self._session, last + SESSION_TTL_MULTIPLIER * self._config.ttl)
        )
        self._session = None
        self._lease.clear()
        self._next_renew_at = 0.0

    # -- cleanup of sessions we gave up ---------------------------------------------------

    def _cleanup_abandoned(self) -> None:
        """Release and destroy sessions we gave up, until Consul has certainly dropped them."""
        with self._lock:
            pending = list(self._abandoned)
        for item in pending:
            if self._clock() < item.dead_by:
                self._release_key(item.session, self._config.kv_path, self._request_timeout())
                self._destroy(item.session, self._request_timeout())
            with self._lock:
                if item in self._abandoned:
                    self._abandoned.remove(item)

    def _release_key(self, session: str, kv_path: str, timeout: float) -> None:
        # An explicit release imposes no lock-delay on the next leader (consul-semantics §1.5).
        self._client.call(
            "PUT", f"/v1/kv/{kv_path}", params={"release": session}, timeout=timeout
        )

    def _destroy(self, session: str, timeout: float) -> None:
        self._client.call("PUT", f"/v1/session/destroy/{session}", timeout=timeout)

    def _request_timeout(self) -> float:
        """Long enough for a slow Consul, never past the lease: a renew answered after the
        deadline is worthless anyway."""
        cap = min(5.0, max(self._config.renew_interval, self._config.ttl / 2))
        remaining = self.lease_remaining()
        if remaining is None:
            return max(0.5, cap)
        return max(0.2, min(cap, remaining))


def _renewed(answer: object, session: str) -> bool:
    """A renew's 200 carries the session back as a one-element array (§1.3)."""
    return (isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict)
            and answer[0].get("ID") == session)
