"""The control API: inspection and fault injection over plain HTTP, in JSON.

    GET    /state                 the cluster state (same JSON as ConsulDouble.snapshot())
    GET    /stats                 request counts per node and endpoint
    GET    /events                the event journal; `?kind=kv_lock_acquired`, `?since=<mono>`
    GET    /blocked               {"blocked": n}: requests waiting in a blocking query
    POST   /stats/reset
    POST   /nodes/<node>/fail     serfHealth critical, sessions invalidated, listener refuses
    POST   /nodes/<node>/recover
    POST   /servers/down          server-bound calls answer 500 `No cluster leader`
    POST   /servers/up
    POST   /servers/failover      {"window": seconds} optional; session timers restart
    POST   /latency               {"seconds": 0.3, "node": "n1"}  (node optional: all)
    POST   /errors                {"node": "n1", "count": 5, "status": 500}
    POST   /acl/tokens            {"secret": "...", "rules": "..."}
    DELETE /acl/tokens/<secret>

Answers are JSON; a bad request answers 400 `{"error": "..."}`, an unknown node 404,
an ACL token while ACLs are disabled 409.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from .wire import Reply, Request, go_json

JsonBody = dict[str, Any]


class Controllable(Protocol):
    node_names: tuple[str, ...]

    def snapshot(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def events(self, since_mono: float | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]: ...
    def blocked_queries(self) -> int: ...
    def reset_stats(self) -> None: ...
    def fail_node(self, node: str) -> None: ...
    def recover_node(self, node: str) -> None: ...
    def servers_down(self) -> None: ...
    def servers_up(self) -> None: ...
    def servers_failover(self, window: float | None = None) -> None: ...
    def set_latency(self, seconds: float, node: str | None = None) -> None: ...
    def inject_errors(self, node: str, count: int, status: int = 500) -> None: ...
    def add_acl_token(self, secret: str, rules: str) -> None: ...
    def revoke_acl_token(self, secret: str) -> None: ...


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlApi:
    def __init__(self, double: Controllable) -> None:
        self._double = double

    def common_headers(self) -> dict[str, str]:
        return {}

    def handle(self, request: Request) -> Reply:
        try:
            action = self._action(request)
            return _json(200, action(_body(request)))
        except ControlError as error:
            return _json(error.status, {"error": str(error)})
        except (KeyError, ValueError, TypeError) as error:
            return _json(400, {"error": str(error)})
        except RuntimeError as error:  # e.g. an ACL token while ACLs are disabled
            return _json(409, {"error": str(error)})

    def _action(self, request: Request) -> Callable[[JsonBody], Any]:
        parts = [part for part in request.path.split("/") if part]
        method = request.method
        double = self._double
        simple: dict[tuple[str, ...], tuple[str, Callable[[JsonBody], Any]]] = {
            ("state",): ("GET", lambda body: double.snapshot()),
            ("stats",): ("GET", lambda body: double.stats()),
            ("events",): ("GET", lambda body: self._events(request)),
            ("blocked",): ("GET", lambda body: {"blocked": double.blocked_queries()}),
            ("stats", "reset"): ("POST", lambda body: _done(double.reset_stats)),
            ("servers", "down"): ("POST", lambda body: _done(double.servers_down)),
            ("servers", "up"): ("POST", lambda body: _done(double.servers_up)),
            ("servers", "failover"): ("POST", self._failover),
            ("latency",): ("POST", self._latency),
            ("errors",): ("POST", self._errors),
            ("acl", "tokens"): ("POST", self._add_token),
        }
        if tuple(parts) in simple:
            allowed, action = simple[tuple(parts)]
            return self._checked(method, allowed, action)
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] in ("fail", "recover"):
            return self._checked(method, "POST", self._node_action(parts[1], parts[2]))
        if len(parts) == 3 and parts[:2] == ["acl", "tokens"]:
            secret = parts[2]
            return self._checked(
                method, "DELETE", lambda body: _done(double.revoke_acl_token, secret)
            )
        raise ControlError(404, f"no control endpoint {method} {request.path}")

    @staticmethod
    def _checked(method: str, allowed: str, action: Callable[[JsonBody], Any]
                 ) -> Callable[[JsonBody], Any]:
        if method != allowed:
            raise ControlError(405, f"use {allowed}")
        return action

    def _node_action(self, node: str, verb: str) -> Callable[[JsonBody], Any]:
        if node not in self._double.node_names:
            raise ControlError(404, f"unknown node {node!r}")
        act = self._double.fail_node if verb == "fail" else self._double.recover_node
        return lambda body: _done(act, node)

    def _events(self, request: Request) -> Any:
        since = request.param("since")
        return self._double.events(
            since_mono=None if since is None else float(since), kind=request.param("kind")
        )

    def _failover(self, body: JsonBody) -> Any:
        window = body.get("window")
        return _done(self._double.servers_failover, None if window is None else float(window))

    def _latency(self, body: JsonBody) -> Any:
        node = body.get("node")
        self._require_known(node)
        return _done(self._double.set_latency, float(body["seconds"]), node)

    def _errors(self, body: JsonBody) -> Any:
        node = body["node"]
        self._require_known(node)
        count = int(body["count"])
        return _done(self._double.inject_errors, node, count, int(body.get("status", 500)))

    def _add_token(self, body: JsonBody) -> Any:
        return _done(self._double.add_acl_token, str(body["secret"]), str(body.get("rules", "")))

    def _require_known(self, node: str | None) -> None:
        if node is not None and node not in self._double.node_names:
            raise ControlError(404, f"unknown node {node!r}")


def _body(request: Request) -> JsonBody:
    if not request.body.strip():
        return {}
    parsed = json.loads(request.body)
    if not isinstance(parsed, dict):
        raise ValueError("the body must be a JSON object")
    return parsed


def _done(action: Callable[..., None], *arguments: Any) -> JsonBody:
    action(*arguments)
    return {"ok": True}


def _json(status: int, value: Any) -> Reply:
    return Reply(status, go_json(value, pretty=True), "application/json", consul_headers=False)
