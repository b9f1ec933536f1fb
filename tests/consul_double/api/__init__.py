"""One node's agent HTTP API: routing, methods, fault injection and error mapping.

consul-semantics.md §0: endpoints registered with their allowed methods (405
with `Allow`, OPTIONS 200), Go ServeMux matching (exact path, else longest
subtree prefix, a subtree without its slash redirects), unknown paths 404
`Invalid URL path: not a recognized HTTP API endpoint`, unclean paths 301 to
the cleaned path with the query kept. Errors map to Consul's codes: HTTPError
its own, ACL 403, state-store and RPC errors 500 (§0, §6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..acl import AclDenied
from ..core import NoClusterLeader, RequestAborted, StateError
from ..durations import GoSyntaxError
from ..faults import INJECTED_ERROR_BODY, NodeFaults
from ..stats import AGENT, SERVER, RequestStats
from ..wire import HttpError, Reply, Request, clean_path, redirect, text_reply
from . import agent, catalog, checks, kv, maintenance, session
from .common import Call, Settings

_LOG = logging.getLogger(__name__)

Handler = Callable[[Call], Reply]
GET, PUT, DELETE = "GET", "PUT", "DELETE"
INVALID_URL_PATH = "Invalid URL path: not a recognized HTTP API endpoint"


@dataclass(frozen=True)
class Route:
    pattern: str  # exact path, or a subtree when it ends with "/"
    methods: tuple[str, ...]
    template: str  # how statistics name it, e.g. "/v1/kv/:key"
    klass: str  # AGENT (answered locally) or SERVER (forwarded to the servers)
    handler: Handler

    @property
    def allow_header(self) -> str:
        return ",".join(("OPTIONS", *self.methods))


def _route(pattern: str, methods: tuple[str, ...], klass: str, handler: Handler,
           template: str | None = None) -> Route:
    return Route(pattern, methods, template or pattern, klass, handler)


ROUTES: tuple[Route, ...] = (
    _route("/v1/kv/", (GET, PUT, DELETE), SERVER, kv.kv_endpoint, "/v1/kv/:key"),
    _route("/v1/session/create", (PUT,), SERVER, session.create),
    _route("/v1/session/destroy/", (PUT,), SERVER, session.destroy, "/v1/session/destroy/:id"),
    _route("/v1/session/renew/", (PUT,), SERVER, session.renew, "/v1/session/renew/:id"),
    _route("/v1/session/info/", (GET,), SERVER, session.info, "/v1/session/info/:id"),
    _route("/v1/session/node/", (GET,), SERVER, session.on_node, "/v1/session/node/:node"),
    _route("/v1/session/list", (GET,), SERVER, session.list_all),
    _route("/v1/agent/self", (GET,), AGENT, agent.agent_self),
    _route("/v1/agent/services", (GET,), AGENT, agent.services),
    _route("/v1/agent/service/", (GET,), AGENT, agent.service_by_id, "/v1/agent/service/:id"),
    _route("/v1/agent/service/register", (PUT,), AGENT, agent.register_service),
    _route("/v1/agent/service/deregister/", (PUT,), AGENT, agent.deregister_service,
           "/v1/agent/service/deregister/:id"),
    # Maintenance mode (addendum §14).
    _route("/v1/agent/maintenance", (PUT,), AGENT, maintenance.node_maintenance),
    _route("/v1/agent/service/maintenance/", (PUT,), AGENT, maintenance.service_maintenance,
           "/v1/agent/service/maintenance/:service_id"),
    _route("/v1/agent/checks", (GET,), AGENT, checks.checks),
    _route("/v1/agent/check/register", (PUT,), AGENT, checks.register_check),
    _route("/v1/agent/check/deregister/", (PUT,), AGENT, checks.deregister_check,
           "/v1/agent/check/deregister/:id"),
    _route("/v1/agent/check/pass/", (PUT,), AGENT, checks.check_pass, "/v1/agent/check/pass/:id"),
    _route("/v1/agent/check/warn/", (PUT,), AGENT, checks.check_warn, "/v1/agent/check/warn/:id"),
    _route("/v1/agent/check/fail/", (PUT,), AGENT, checks.check_fail, "/v1/agent/check/fail/:id"),
    _route("/v1/agent/check/update/", (PUT,), AGENT, checks.check_update,
           "/v1/agent/check/update/:id"),
    _route("/v1/catalog/services", (GET,), SERVER, catalog.catalog_services),
    _route("/v1/catalog/nodes", (GET,), SERVER, catalog.catalog_nodes),
    _route("/v1/catalog/deregister", (PUT,), SERVER, catalog.catalog_deregister),
    _route("/v1/catalog/service/", (GET,), SERVER, catalog.catalog_service,
           "/v1/catalog/service/:name"),
    _route("/v1/health/service/", (GET,), SERVER, catalog.health_service,
           "/v1/health/service/:name"),
    _route("/v1/health/checks/", (GET,), SERVER, catalog.health_checks,
           "/v1/health/checks/:service"),
    _route("/v1/health/node/", (GET,), SERVER, catalog.health_node, "/v1/health/node/:node"),
    _route("/v1/health/state/", (GET,), SERVER, catalog.health_state, "/v1/health/state/:state"),
    _route("/v1/status/leader", (GET,), SERVER, catalog.status_leader),
    _route("/v1/status/peers", (GET,), SERVER, catalog.status_peers),
)

_EXACT = {route.pattern: route for route in ROUTES if not route.pattern.endswith("/")}
_SUBTREES = sorted(
    (route for route in ROUTES if route.pattern.endswith("/")),
    key=lambda route: len(route.pattern),
    reverse=True,
)
_SUBTREE_PATTERNS = frozenset(route.pattern for route in _SUBTREES)


def match_route(path: str) -> tuple[Route, str] | None:
    """Go ServeMux: an exact pattern, else the longest subtree prefix (suffix returned)."""
    exact = _EXACT.get(path)
    if exact is not None:
        return exact, ""
    for route in _SUBTREES:
        if path.startswith(route.pattern):
            return route, path[len(route.pattern):]
    return None


class AgentApi:
    """Answers the HTTP requests that reach one node's agent listener."""

    def __init__(
        self, node: str, settings: Settings, stats: RequestStats, faults: NodeFaults
    ) -> None:
        self.node = node
        self._settings = settings
        self._stats = stats
        self._faults = faults

    def common_headers(self) -> dict[str, str]:
        """§0: X-Consul-Default-ACL-Policy on every wrapped response, ACLs on or off."""
        return {"X-Consul-Default-ACL-Policy": self._settings.default_policy}

    def handle(self, request: Request) -> Reply:
        """The reply to send; raises RequestAborted when the connection must just close."""
        if not self._settings.state.node_reachable(self.node):
            raise RequestAborted
        cleaned = clean_path(request.raw_path)
        if cleaned != request.raw_path:
            self._stats.record(self.node, f"{request.method} (redirect)", AGENT)
            query = f"?{request.raw_query}" if request.raw_query else ""
            return redirect(cleaned + query, 301, request.method)
        matched = match_route(request.path)
        if matched is None:
            return self._unrouted(request)
        route, suffix = matched
        self._stats.record(self.node, f"{request.method} {route.template}", route.klass)
        self._faults.delay()
        injected_status = self._faults.take_error()
        if injected_status is not None:
            return text_reply(injected_status, INJECTED_ERROR_BODY)
        if request.method == "OPTIONS":
            return Reply(200, headers={"Allow": route.allow_header})
        if request.method not in route.methods:
            reply = text_reply(405, f"method {request.method} not allowed")
            reply.headers["Allow"] = route.allow_header
            return reply
        return self._dispatch(route, Call(request, self.node, self._settings, suffix))

    def _unrouted(self, request: Request) -> Reply:
        self._stats.record(self.node, f"{request.method} (unknown)", AGENT)
        if request.path + "/" in _SUBTREE_PATTERNS:
            # ServeMux redirects a subtree's root without its trailing slash.
            query = f"?{request.raw_query}" if request.raw_query else ""
            return redirect(request.path + "/" + query, 301, request.method)
        return text_reply(404, INVALID_URL_PATH)

    @staticmethod
    def _dispatch(route: Route, call: Call) -> Reply:
        try:
            return route.handler(call)
        except HttpError as error:
            return text_reply(error.status, error.message)
        except AclDenied as error:
            return text_reply(403, error.message)
        except (StateError, NoClusterLeader, GoSyntaxError) as error:
            return text_reply(500, str(error))
        except RequestAborted:
            raise
        except Exception as error:
            _LOG.exception("consul double: %s %s failed", call.request.method, call.request.path)
            return text_reply(500, f"consul double internal error: {error!r}")
