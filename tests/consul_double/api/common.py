"""What every endpoint handler shares: the call context, query options, ACLs, metadata.

consul-semantics.md §3 (blocking parameters, timeouts, jitter, index never 0),
§2.2 (consistency modes and query-meta headers), §6 (ACL filtering and header).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from ..acl import AclSystem, token_from_request
from ..decoding import DecodeError, Schema, decode
from ..durations import SECOND, GoSyntaxError, parse_duration, parse_uint64
from ..filter import FilterError, Struct, compile_filter
from ..model import NodeRecord
from ..store import ClusterState, LeaderView, QueryResult
from ..watch import WatchSpec
from ..wire import HttpError, Request

DEFAULT_QUERY_TIME = 300.0  # default_query_time (§3)
MAX_QUERY_TIME = 600.0  # max_query_time (§3)
JITTER_FRACTION = 16  # structs.JitterFraction
KV_MAX_VALUE_SIZE = 512 * 1024  # kv_max_value_size (§2.3)


class AuthorizerLike(Protocol):
    def allows(self, resource: str, name: str, access: str) -> bool: ...

    def require(self, resource: str, name: str, access: str) -> None: ...


class AllowAll:
    """The authorizer when ACLs are disabled."""

    def allows(self, resource: str, name: str, access: str) -> bool:
        return True

    def require(self, resource: str, name: str, access: str) -> None:
        return None


@dataclass(frozen=True)


class Settings:
    """Cluster-wide settings every node's API shares."""

    state: ClusterState
    acl: AclSystem | None = None

    @property
    def acl_enabled(self) -> bool:
        return self.acl is not None and self.acl.enabled

    @property
    def default_policy(self) -> str:
        if self.acl is None or not self.acl.enabled:
            return "allow"
        return self.acl.default_policy


class Call:
    """One request to one node's agent, with what handlers need to answer it."""

    def __init__(self, request: Request, node: str, settings: Settings, suffix: str) -> None:
        self.request = request
        self.node = node
        self.settings = settings
        self.state = settings.state
        self.suffix = suffix  # the decoded path after the route's prefix
        self.filtered_by_acl = False

    def aborted(self) -> bool:
        """True once this node failed or the double stops: drop the connection."""
        return not self.state.node_reachable(self.node)

    @cached_property
    def token(self) -> str | None:
        return token_from_request(self.request.query, self.request.headers)

    @cached_property
    def authz(self) -> AuthorizerLike:
        """Resolved once per request; raises AclDenied (403) for an unknown token."""
        acl = self.settings.acl
        if acl is None or not acl.enabled:
            return AllowAll()
        return acl.resolve(self.token)

    def allows(self, resource: str, name: str, access: str = "read") -> bool:
        """For list filtering (§6): remembers that something was dropped."""
        if self.authz.allows(resource, name, access):
            return True
        self.filtered_by_acl = True
        return False

    def require(self, resource: str, name: str, access: str) -> None:
        self.authz.require(resource, name, access)

    def acl_headers(self) -> dict[str, str]:
        if self.filtered_by_acl and self.token:
            return {"X-Consul-Results-Filtered-By-ACLs": "true"}
        return {}

    def apply_filter(
        self, views: list[dict[str, Any]], schema: Struct | None = None
    ) -> list[dict[str, Any]]:
        """`?filter=` (go-bexpr) on the rendered objects; a bad filter answers its status."""
        expression = self.request.param("filter")
        if not expression:
            return views
        try:
            matches = compile_filter(expression, schema=schema)
            return [view for view in views if matches(view)]
        except FilterError as error:
            raise HttpError(error.status, str(error)) from None


@dataclass(frozen=True)


class QueryOptions:
    """`parse()` in Consul's http.go: consistency, then wait, then index."""

    min_index: int
    wait: float | None
    stale: bool
    consistent: bool

    @classmethod
    def parse(cls, request: Request) -> QueryOptions:
        stale = request.has("stale")
        consistent = request.has("consistent")
        if stale and consistent:
            raise HttpError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        return cls(_parse_index(request), parse_wait(request), stale, consistent)

    def timeout(self) -> float:
        return blocking_timeout(self.wait)

    @property
    def consistency(self) -> str:
        if self.stale:
            return "stale"
        return "consistent" if self.consistent else "leader"


def blocking_timeout(wait: float | None) -> float:
    """§3: wait capped at 10m, 5m when absent or <= 0, plus jitter up to wait/16."""
    chosen = wait if wait is not None else 0.0
    if chosen > MAX_QUERY_TIME:
        chosen = MAX_QUERY_TIME
    elif chosen <= 0:
        chosen = DEFAULT_QUERY_TIME
    return chosen + random.uniform(0, chosen / JITTER_FRACTION)


def parse_wait(request: Request) -> float | None:
    text = request.param("wait")
    if not text:
        return None
    try:
        return parse_duration(text) / SECOND
    except GoSyntaxError:
        raise HttpError(400, "Invalid wait time") from None


def _parse_index(request: Request) -> int:
    text = request.param("index")
    if not text:
        return 0
    try:
        return parse_uint64(text)
    except GoSyntaxError:
        raise HttpError(400, "Invalid index") from None


NO_DC_PATH = "No path to datacenter"


def require_local_dc(call: Call) -> None:
    """`?dc=` naming another datacenter: 500 `No path to datacenter` (addendum §12).

    consul: agent/http.go (parseDC) puts the name into the request; the server forwards
    any other datacenter (agent/consul/rpc.go forwardRequestToOtherDatacenter) and, this
    double knowing no other, answers structs.ErrNoDCPath before any leader or ACL step.
    """
    datacenter = call.request.param("dc") or ""
    if datacenter and datacenter != call.state.datacenter:
        raise HttpError(500, NO_DC_PATH)


def meta_headers(index: int, leader: LeaderView, options: QueryOptions) -> dict[str, str]:
    """setMeta (§2.2): X-Consul-Index is never 0."""
    return {
        "X-Consul-Index": str(max(index, 1)),
        "X-Consul-LastContact": str(leader.last_contact_ms),
        "X-Consul-KnownLeader": "true" if leader.known else "false",
        "X-Consul-Effective-Consistency": options.consistency,
        "X-Consul-Query-Backend": "blocking-query",
    }


def run_query(
    call: Call, options: QueryOptions, watch: WatchSpec, evaluate: Callable[[], QueryResult]
) -> tuple[QueryResult, dict[str, str]]:
    """A server-bound read: blocking per §3, then its metadata (+ the ACL filter header)."""
    require_local_dc(call)
    _ = call.authz  # resolve the token before blocking: an unknown token answers 403 at once

    def evaluate_fresh() -> QueryResult:
        call.filtered_by_acl = False
        return evaluate()

    result, leader = call.state.blocking_query(
        evaluate_fresh,
        watch,
        options.min_index,
        options.timeout(),
        allow_stale=options.stale,
        abort=call.aborted,
    )
    headers = meta_headers(result.index, leader, options)
    headers.update(call.acl_headers())
    return result, headers


def path_id(call: Call, missing_message: str) -> str:
    """The `:id` after the route prefix; empty answers 400 with Consul's message."""
    if not call.suffix:
        raise HttpError(400, missing_message)
    return call.suffix


def decode_or_400(call: Call, schema: Schema) -> dict[str, Any]:
    """A strict/lenient body decode (§0); a failure answers 400 `Request decode failed`."""
    try:
        return decode(call.request.body, schema)
    except DecodeError as error:
        raise HttpError(400, f"Request decode failed: {error}") from None


def agent_node(call: Call) -> NodeRecord:
    """The catalog record of the node whose agent the request reached."""
    node = call.state.catalog.node(call.node)
    assert node is not None, f"node {call.node} serves requests but is not in the catalog"
    return node
