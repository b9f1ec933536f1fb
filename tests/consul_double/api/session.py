"""`/v1/session/*` (consul-semantics.md §1): create, info, list, node, renew, destroy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import views
from ..decoding import SESSION, DecodeError, decode
from ..model import ServiceCheckRef, Session
from ..sessions import SessionSpec, fixup_empty_session_checks
from ..store import QueryResult
from ..watch import SESSIONS_TOPIC, WatchSpec, session_node_topic, session_topic
from ..wire import HttpError, Reply, json_reply
from .common import Call, QueryOptions, path_id, require_local_dc, run_query


def create(call: Call) -> Reply:
    """§1.1: defaults first (this agent's node, serfHealth, 15s, release), then the body."""
    spec = SessionSpec(node=call.node)
    if call.request.body:
        try:
            _apply_body(spec, decode(call.request.body, SESSION))
        except DecodeError as error:
            raise HttpError(400, f"Request decode failed: {error}") from None
    fixup_empty_session_checks(spec)
    require_local_dc(call)
    call.require("session", spec.node, "write")
    with call.state.server_write(call.aborted) as txn:
        session = call.state.sessions.create(txn, spec)
    return json_reply({"ID": session.id}, call.request)


def _apply_body(spec: SessionSpec, body: dict[str, Any]) -> None:
    spec.name = body.get("Name", spec.name)
    spec.node = body.get("Node", spec.node)
    spec.lock_delay_ns = body.get("LockDelay", spec.lock_delay_ns)
    spec.behavior = body.get("Behavior", spec.behavior)
    spec.ttl = body.get("TTL", spec.ttl)
    if "NodeChecks" in body:
        spec.node_checks = body["NodeChecks"]
    if "Checks" in body:
        spec.checks = body["Checks"]
    if "ServiceChecks" in body:
        refs = body["ServiceChecks"]
        spec.service_checks = None if refs is None else [
            ServiceCheckRef(ref.get("ID", ""), ref.get("Namespace", "")) if ref else
            ServiceCheckRef("")
            for ref in refs
        ]


def info(call: Call) -> Reply:
    """§1.3: always an array, `[]` for an unknown ID; blocks on that session."""
    options = QueryOptions.parse(call.request)
    session_id = path_id(call, "Missing session")

    def evaluate() -> QueryResult:
        session = call.state.sessions.get(session_id)
        found = [] if session is None else [session]
        index = call.state.sessions.table_index()
        return QueryResult(_readable(call, found), index, missing=session is None)

    watch = WatchSpec.of(session_topic(session_id))
    return _answer(call, options, watch, evaluate)


def list_all(call: Call) -> Reply:
    options = QueryOptions.parse(call.request)

    def evaluate() -> QueryResult:
        sessions = call.state.sessions
        return QueryResult(_readable(call, sessions.all()), sessions.table_index())

    return _answer(call, options, WatchSpec.of(SESSIONS_TOPIC), evaluate)


def on_node(call: Call) -> Reply:
    options = QueryOptions.parse(call.request)
    node = path_id(call, "Missing node name")

    def evaluate() -> QueryResult:
        sessions = call.state.sessions
        return QueryResult(_readable(call, sessions.on_node(node)), sessions.table_index())

    return _answer(call, options, WatchSpec.of(session_node_topic(node)), evaluate)


def renew(call: Call) -> Reply:
    """§1.3: `[session]` unchanged, or 404 `Session id '<id>' not found`."""
    session_id = path_id(call, "Missing session")
    require_local_dc(call)
    _ = call.authz
    with call.state.server_call(call.aborted):
        session = call.state.sessions.get(session_id)
        if session is None:
            raise HttpError(404, f"Session id '{session_id}' not found")
        call.require("session", session.node, "write")
        call.state.sessions.renew(session_id)
        body = [views.session(session)]
    return json_reply(body, call.request)


def destroy(call: Call) -> Reply:
    """§1.3: `true`, also for an unknown session; invalidates like any cause (§1.5)."""
    session_id = path_id(call, "Missing session")
    require_local_dc(call)
    _ = call.authz
    with call.state.server_write(call.aborted) as txn:
        session = call.state.sessions.get(session_id)
        if session is not None:
            call.require("session", session.node, "write")
            call.state.sessions.destroy(txn, session_id)
    return json_reply(True, call.request)


def _readable(call: Call, sessions: list[Session]) -> list[dict[str, Any]]:
    return [views.session(s) for s in sessions if call.allows("session", s.node)]


def _answer(
    call: Call, options: QueryOptions, watch: WatchSpec, evaluate: Callable[[], QueryResult]
) -> Reply:
    result, headers = run_query(call, options, watch, evaluate)
    return json_reply(result.value, call.request, headers)
