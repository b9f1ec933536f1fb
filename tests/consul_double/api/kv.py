"""`/v1/kv/` (consul-semantics.md §2): GET single/recurse/keys/raw, PUT, DELETE."""

from __future__ import annotations

from urllib.parse import quote_plus

from .. import views
from ..durations import parse_uint64
from ..store import QueryResult
from ..watch import WatchSpec, kv_topic
from ..wire import HttpError, Reply, Request, json_reply
from .common import KV_MAX_VALUE_SIZE, Call, QueryOptions, require_local_dc, run_query

_RAW_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


def kv_endpoint(call: Call) -> Reply:
    """§2: the key is the decoded path after `/v1/kv/`; every method parses query options."""
    options = QueryOptions.parse(call.request)
    method = call.request.method
    if method == "GET":
        if call.request.has("keys"):
            return _get_keys(call, options)
        return _get(call, options)
    if method == "PUT":
        return _put(call)
    return _delete(call)


def _get(call: Call, options: QueryOptions) -> Reply:
    """§2.2: one key (404 with metadata when missing) or `?recurse` (404 when empty)."""
    key = call.suffix
    recurse = call.request.has("recurse")
    if not recurse and not key:
        raise HttpError(400, "Missing key name")
    if recurse:
        watch = WatchSpec(kv_prefix=key)
        result, headers = run_query(call, options, watch, lambda: _evaluate_list(call, key))
    else:
        require_local_dc(call)
        call.require("key", key, "read")
        watch = WatchSpec.of(kv_topic(key))
        result, headers = run_query(call, options, watch, lambda: _evaluate_get(call, key))
    if not result.value:
        return Reply(404, headers=headers)
    if call.request.has("raw") and not recurse:
        headers.update(_RAW_HEADERS)
        return Reply(200, result.value[0][1], "text/plain", headers)
    return json_reply([view for view, _ in result.value], call.request, headers)


def _evaluate_get(call: Call, key: str) -> QueryResult:
    index, entry = call.state.kv.get(key)
    if entry is None:
        return QueryResult([], index, missing=True)
    return QueryResult([(views.kv_entry(entry), entry.value or b"")], index)


def _evaluate_list(call: Call, prefix: str) -> QueryResult:
    index, entries = call.state.kv.list_prefix(prefix)
    readable = [entry for entry in entries if call.allows("key", entry.key)]
    return QueryResult([(views.kv_entry(entry), b"") for entry in readable], index)


def _get_keys(call: Call, options: QueryOptions) -> Reply:
    """§2.2 `?keys`: names cut at `separator` (or `seperator`); `[]` only for the root."""
    prefix = call.suffix
    separator = call.request.param("separator")
    if separator is None:
        separator = call.request.param("seperator") or ""

    def evaluate() -> QueryResult:
        index, keys = call.state.kv.keys(prefix, separator)
        return QueryResult([key for key in keys if call.allows("key", key)], index)

    result, headers = run_query(call, options, WatchSpec(kv_prefix=prefix), evaluate)
    if not result.value and prefix:
        return Reply(404, headers=headers)
    return json_reply(result.value, call.request, headers)


def _put(call: Call) -> Reply:
    """§2.3: plain / `?cas` / `?acquire` / `?release`, `?flags` (missing → 0)."""
    request = call.request
    key = call.suffix
    if not key:
        raise HttpError(400, "Missing key name")
    _refuse_conflicting_flags(request, ("cas", "acquire", "release"))
    flags = parse_uint64(request.param("flags") or "") if request.has("flags") else 0
    cas = parse_uint64(request.param("cas") or "") if request.has("cas") else None
    if len(request.body) > KV_MAX_VALUE_SIZE:
        raise HttpError(413, _too_large_message(len(request.body)))
    value = request.body or None  # an empty body stores a nil value: "Value": null
    require_local_dc(call)
    call.require("key", key, "write")
    kv = call.state.kv
    with call.state.server_write(call.aborted) as txn:
        if request.has("acquire"):
            session_id = request.param("acquire") or ""
            done = kv.acquire(txn, key, value, flags, session_id, call.state.sessions.exists)
        elif request.has("release"):
            done = kv.release(txn, key, value, flags, request.param("release") or "")
        elif cas is not None:
            done = kv.cas(txn, key, value, flags, cas)
        else:
            done = kv.set(txn, key, value, flags)
    return json_reply(done, request)


def _delete(call: Call) -> Reply:
    """§2.4: plain (always true), `?cas` (true/false), `?recurse` (a whole prefix)."""
    request = call.request
    key = call.suffix
    _refuse_conflicting_flags(request, ("recurse", "cas"))
    recurse = request.has("recurse")
    if not recurse and not key:
        raise HttpError(400, "Missing key name")
    cas = parse_uint64(request.param("cas") or "") if request.has("cas") else None
    require_local_dc(call)
    call.require("key", key, "write")  # for recurse: write on the prefix
    kv = call.state.kv
    with call.state.server_write(call.aborted) as txn:
        if cas is not None:
            done = kv.delete_cas(txn, key, cas)
        elif recurse:
            kv.delete_tree(txn, key)
            done = True
        else:
            kv.delete(txn, key)
            done = True
    return json_reply(done, request)


def _refuse_conflicting_flags(request: Request, flags: tuple[str, ...]) -> None:
    """conflictingFlags: 400 `Conflicting flags: <url.Values.Encode() of the query>`."""
    if sum(1 for flag in flags if request.has(flag)) > 1:
        raise HttpError(400, "Conflicting flags: " + go_query_encode(request.query))


def go_query_encode(query: dict[str, list[str]]) -> str:
    """Go's url.Values.Encode(): keys sorted, QueryEscape'd (space as +)."""
    return "&".join(
        f"{quote_plus(name)}={quote_plus(value)}"
        for name in sorted(query)
        for value in query[name]
    )


def _too_large_message(size: int) -> str:
    return (
        f"Request body({size} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See "
        "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
    )
