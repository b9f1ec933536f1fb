"""The session table: create validation, TTL timers and invalidation (consul-semantics.md §1).

Every method is called with the cluster lock held; writes take the caller's Txn.
Guarantees:
* Create validates in Consul's order: Behavior, TTL range, node, then each check
  (exists on the session's node, not critical) (§1.1).
* A TTL session is invalidated exactly 2xTTL after its create, last renew, or the
  last leader election, whichever is latest; never while there is no leader (§1.4).
* Invalidation deletes the session and releases (or deletes) its keys with
  lock-delay, in the same write (§1.5).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import events
from .core import Core, StateError, Txn
from .durations import HOUR, SECOND, GoSyntaxError, format_duration, parse_duration
from .kv import KvTable
from .model import (
    BEHAVIOR_DELETE,
    BEHAVIOR_RELEASE,
    CRITICAL,
    SERF_CHECK_ID,
    NodeRecord,
    ServiceCheckRef,
    Session,
)
from .timers import TimerHandle
from .watch import SESSIONS_TOPIC, session_node_topic, session_topic

SESSIONS_TABLE = "sessions"
SESSION_TTL_MAX_NS = 24 * HOUR  # structs.SessionTTLMax
SESSION_TTL_MULTIPLIER = 2  # structs.SessionTTLMultiplier (§1.4)
DEFAULT_LOCK_DELAY_NS = 15 * SECOND


@dataclass
class SessionSpec:
    """A create request after the HTTP layer applied Consul's defaults (§1.1)."""

    node: str
    name: str = ""
    lock_delay_ns: int = DEFAULT_LOCK_DELAY_NS
    behavior: str = BEHAVIOR_RELEASE
    ttl: str = ""
    node_checks: list[str] | None = field(default_factory=lambda: [SERF_CHECK_ID])
    service_checks: list[ServiceCheckRef] | None = None
    checks: list[str] | None = field(default_factory=lambda: [SERF_CHECK_ID])


def fixup_empty_session_checks(spec: SessionSpec) -> None:
    """`fixupEmptySessionChecks` (§1.1): reconcile the legacy Checks with NodeChecks."""
    if not spec.checks:
        spec.node_checks = []  # "Checks": [] or null means no checks at all
        return
    if spec.checks == [SERF_CHECK_ID]:
        spec.checks = None  # the default; NodeChecks decides
        return
    if not spec.node_checks:
        spec.checks = None


class SessionTable:
    def __init__(self, core: Core, kv: KvTable, nodes: dict[str, NodeRecord],
                 ttl_min_ns: int) -> None:
        self._core = core
        self._kv = kv
        self._nodes = nodes
        self._ttl_min_ns = ttl_min_ns
        self._sessions: dict[str, Session] = {}
        self._timers_running = True

    # -- reads ---------------------------------------------------------------

    def table_index(self) -> int:
        return self._core.table_index(SESSIONS_TABLE)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def exists(self, session_id: str) -> bool:
        return session_id in self._sessions

    def all(self) -> list[Session]:
        return [self._sessions[key] for key in sorted(self._sessions)]

    def on_node(self, node: str) -> list[Session]:
        return [session for session in self.all() if session.node == node]

    # -- writes --------------------------------------------------------------

    def create(self, txn: Txn, spec: SessionSpec) -> Session:
        if not spec.node:
            raise StateError("Must provide Node")
        behavior = self._validated_behavior(spec.behavior)
        ttl_ns = self._validated_ttl(spec.ttl)
        session = Session(
            id=self._new_id(),
            name=spec.name,
            node=spec.node,
            lock_delay_ns=spec.lock_delay_ns,
            behavior=behavior,
            ttl=spec.ttl,
            node_checks=spec.node_checks,
            service_checks=spec.service_checks,
            checks=spec.checks,
            ttl_ns=ttl_ns,
        )
        self._verify_node_and_checks(session)
        index = txn.changed(SESSIONS_TABLE, *self._topics(session))
        session.create_index = session.modify_index = index
        self._sessions[session.id] = session
        self._arm_ttl_timer(session)
        self._core.journal.record(events.SESSION_CREATED, id=session.id, node=session.node)
        return session

    def renew(self, session_id: str) -> Session | None:
        """§1.3 renew: restart the full 2xTTL timer; the stored session is returned unchanged."""
        session = self._sessions.get(session_id)
        if session is not None:
            self._arm_ttl_timer(session)
        return session

    def destroy(self, txn: Txn, session_id: str) -> None:
        """§1.3 destroy: idempotent; invalidates like any other cause (§1.5)."""
        session = self._sessions.get(session_id)
        if session is not None:
            self.invalidate(txn, session, events.CAUSE_DESTROY)

    def invalidate(self, txn: Txn, session: Session, cause: str) -> None:
        """§1.5 `deleteSessionTxn`: remove the session, free its keys, apply lock-delay.

        `cause` is the journal's session_invalidated cause (events.CAUSE_*).
        """
        self._core.timers.cancel(session.ttl_timer)
        session.ttl_timer = None
        del self._sessions[session.id]
        txn.changed(SESSIONS_TABLE, *self._topics(session))
        self._core.journal.record(
            events.SESSION_INVALIDATED, id=session.id, node=session.node, cause=cause
        )
        self._kv.invalidate_session(
            txn, session.id, session.behavior == BEHAVIOR_DELETE, session.lock_delay_ns
        )

    def invalidate_bound_to(
        self, txn: Txn, node: str, check_ids: Iterable[str], cause: str
    ) -> None:
        """§1.5: a linked check went critical or was deregistered.

        consul: agent/consul/state/session.go (session_checks indexes node and check ID
        lowercased), so the session's spelling of the ID need not match the check's.
        """
        doomed = {check_id.lower() for check_id in check_ids}
        for session in self.all():
            bound = {check_id.lower() for check_id in session.check_ids()}
            if session.node == node and doomed & bound:
                self.invalidate(txn, session, cause)

    def stop_timers(self) -> None:
        """No leader: TTL timers live only on the leader (§1.4), so nothing expires."""
        self._timers_running = False
        for session in self._sessions.values():
            self._core.timers.cancel(session.ttl_timer)
            session.ttl_timer = None

    def restart_timers(self) -> None:
        """A leader was elected: `initializeSessionTimers` restarts every timer at 2xTTL."""
        self._timers_running = True
        for session in self._sessions.values():
            self._arm_ttl_timer(session)

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _validated_behavior(behavior: str) -> str:
        if behavior == "":
            return BEHAVIOR_RELEASE
        if behavior not in (BEHAVIOR_RELEASE, BEHAVIOR_DELETE):
            raise StateError(f"Invalid Behavior setting '{behavior}'")
        return behavior

    def _validated_ttl(self, ttl: str) -> int:
        if ttl == "":
            return 0
        try:
            ttl_ns = parse_duration(ttl)
        except GoSyntaxError as error:
            raise StateError(f"Session TTL '{ttl}' invalid: {error}") from None
        if ttl_ns != 0 and not self._ttl_min_ns <= ttl_ns <= SESSION_TTL_MAX_NS:
            raise StateError(
                f"Invalid Session TTL '{ttl_ns}', must be between "
                f"[{format_duration(self._ttl_min_ns)}={format_duration(SESSION_TTL_MAX_NS)}]"
            )
        return ttl_ns

    def _verify_node_and_checks(self, session: Session) -> None:
        node = self._nodes.get(session.node)
        if node is None:
            raise StateError("Missing node registration")
        for check_id in session.check_ids():
            check = node.catalog_check(check_id)
            if check is None:
                raise StateError(f"Missing check '{check_id}' registration")
            if check.catalog_status == CRITICAL:
                raise StateError(f"Check '{check_id}' is in {check.catalog_status} state")

    def _new_id(self) -> str:
        # hashicorp/go-uuid: 16 random bytes in 8-4-4-4-12 hex, no RFC 4122 version bits.
        while True:
            candidate = str(uuid.UUID(bytes=os.urandom(16)))
            if candidate not in self._sessions:
                return candidate

    @staticmethod
    def _topics(session: Session) -> tuple[tuple[str, ...], ...]:
        return SESSIONS_TOPIC, session_topic(session.id), session_node_topic(session.node)

    def _arm_ttl_timer(self, session: Session) -> None:
        self._core.timers.cancel(session.ttl_timer)
        session.ttl_timer = None
        if session.ttl_ns <= 0 or not self._timers_running:
            return
        delay = SESSION_TTL_MULTIPLIER * session.ttl_ns / SECOND
        session.ttl_timer = self._core.timers.schedule(
            delay, functools.partial(self._on_ttl_expired, session.id)
        )

    def _on_ttl_expired(self, session_id: str, handle: TimerHandle) -> None:
        """Timer thread: destroy the session unless a renew re-armed it meanwhile."""
        with self._core.write() as txn:
            session = self._sessions.get(session_id)
            if session is not None and session.ttl_timer is handle:
                self.invalidate(txn, session, events.CAUSE_TTL)
