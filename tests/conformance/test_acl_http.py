"""ACLs over HTTP (consul-semantics.md §6): where the token comes from, how refusals read,
which reads filter instead of failing, and the leaderless 500.

These tests need tokens the test defines, so they run only against the double (an
ACL-enabled real agent would need its tokens created through the ACL API first); the
rules engine itself is covered by test_acl_rules.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conformance.conftest import REAL_CONSUL_ADDR
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem

TIMEOUT = 10.0
ROOT = "root-secret"
APP = "app-secret"
READER = "reader-secret"
READER_RULES = 'key_prefix "" { policy = "read" }\nsession_prefix "" { policy = "read" }\n'

APP_RULES = """
key_prefix "app/" { policy = "write" }
session "n1" { policy = "write" }
service "web" { policy = "write" }
node_prefix "" { policy = "read" }
"""
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


@pytest.fixture
def secured() -> Iterator[ConsulDouble]:
    if REAL_CONSUL_ADDR:
        pytest.skip("needs the Consul double with its own ACL tokens")
    acl = AclSystem(default_policy="deny", tokens={APP: APP_RULES, READER: READER_RULES},
                    management_tokens=[ROOT])
    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0, rpc_hold_timeout=0.1,
                      acl=acl) as double:
        yield double


def call(double: ConsulDouble, method: str, path: str, node: str = "n1",
         **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return requests.request(method, double.node_addr(node) + path, **kwargs)


def accessor_of(double: ConsulDouble, secret: str) -> str:
    assert double.acl is not None
    return double.acl.resolve(secret).accessor_id


def as_root(double: ConsulDouble, method: str, path: str, node: str = "n1",
            **kwargs: Any) -> requests.Response:
    response = call(double, method, path, node, headers={"X-Consul-Token": ROOT}, **kwargs)
    assert response.status_code == 200, response.text
    return response


# -- token sources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query_token", "headers", "allowed"),
    [
        (None, {"X-Consul-Token": APP}, True),
        (None, {"Authorization": f"Bearer {APP}"}, True),
        (None, {"Authorization": f"bearer {APP}"}, True),
        (APP, {"X-Consul-Token": "unknown"}, True),
        ("unknown", {"X-Consul-Token": APP}, False),
        (None, {"X-Consul-Token": APP, "Authorization": "Bearer unknown"}, True),
        (None, {"X-Consul-Token": "unknown", "Authorization": f"Bearer {APP}"}, False),
    ],
    ids=["header", "bearer", "bearer-any-case", "query-beats-header", "query-wins-even-bad",
         "header-beats-bearer", "header-wins-even-bad"],
)
def test_token_precedence_is_query_then_header_then_bearer(
    secured: ConsulDouble, query_token: str | None, headers: dict[str, str], allowed: bool
) -> None:
    """§6/§8.10: `?token=` first, then X-Consul-Token, then `Authorization: Bearer`."""
    params = {"token": query_token} if query_token else {}
    response = call(secured, "PUT", "/v1/kv/app/x", data=b"1", params=params, headers=headers)
    if allowed:
        assert (response.status_code, response.json()) == (200, True)
    else:
        assert (response.status_code, response.text) == (403, "ACL not found")


# -- refusals ----------------------------------------------------------------------------


def test_denial_names_the_accessor_the_permission_and_the_resource(
    secured: ConsulDouble,
) -> None:
    """§6: 403 `Permission denied: token with AccessorID '<id>' lacks permission ...`."""
    response = call(secured, "PUT", "/v1/kv/other/x", data=b"1", headers={"X-Consul-Token": APP})
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == (
        f"Permission denied: token with AccessorID '{accessor_of(secured, APP)}' "
        "lacks permission 'key:write' on \"other/x\""
    )


def test_denial_of_the_anonymous_token_explains_it(secured: ConsulDouble) -> None:
    """§6: without a token the anonymous token is used, and the refusal says so."""
    response = call(secured, "PUT", "/v1/session/create", json={})
    assert response.status_code == 403
    assert response.text == (
        "Permission denied: anonymous token lacks permission 'session:write' on \"n1\". "
        "The anonymous token is used implicitly when a request does not specify a token."
    )


def test_unknown_token_is_acl_not_found(secured: ConsulDouble) -> None:
    """§6: an unknown secret → 403 `ACL not found`, also on endpoints that filter."""
    for path in ("/v1/kv/app/x", "/v1/agent/services", "/v1/health/service/web"):
        response = call(secured, "GET", path, headers={"X-Consul-Token": "no-such-secret"})
        assert (response.status_code, response.text) == (403, "ACL not found"), path


def test_single_key_read_without_permission_is_a_403(secured: ConsulDouble) -> None:
    """§6: a single-key KV GET does not filter: 403 without key:read."""
    as_root(secured, "PUT", "/v1/kv/secret/x", data=b"1")
    response = call(secured, "GET", "/v1/kv/secret/x", headers={"X-Consul-Token": APP})
    assert response.status_code == 403
    assert "lacks permission 'key:read' on \"secret/x\"" in response.text


def test_each_lock_step_needs_its_permission(secured: ConsulDouble) -> None:
    """§6: session:write on the node for create; key:write for acquire."""
    token = {"X-Consul-Token": APP}
    created = call(secured, "PUT", "/v1/session/create", json={}, headers=token)
    assert created.status_code == 200, created.text
    session_id = created.json()["ID"]
    on_n2 = call(secured, "PUT", "/v1/session/create", node="n2", json={}, headers=token)
    assert on_n2.status_code == 403
    assert "'session:write' on \"n2\"" in on_n2.text
    acquired = call(secured, "PUT", f"/v1/kv/app/lock?acquire={session_id}", headers=token)
    assert acquired.json() is True
    refused = call(secured, "PUT", f"/v1/kv/locks/x?acquire={session_id}", headers=token)
    assert refused.status_code == 403


def test_renew_and_destroy_need_session_write(secured: ConsulDouble) -> None:
    """§6: renew and destroy need session:write on the session's node; read is not enough."""
    session_id = as_root(secured, "PUT", "/v1/session/create", json={}).json()["ID"]
    reader = {"X-Consul-Token": READER}
    for verb in ("renew", "destroy"):
        response = call(secured, "PUT", f"/v1/session/{verb}/{session_id}", headers=reader)
        assert response.status_code == 403, verb
        assert "lacks permission 'session:write' on \"n1\"" in response.text
    info = call(secured, "GET", f"/v1/session/info/{session_id}", headers=reader)
    assert [entry["ID"] for entry in info.json()] == [session_id]


def test_agent_self_needs_agent_read(secured: ConsulDouble) -> None:
    """§4.5/§6: /v1/agent/self needs agent:read on the agent's node."""
    response = call(secured, "GET", "/v1/agent/self", headers={"X-Consul-Token": APP})
    assert response.status_code == 403
    assert response.text == (
        f"Permission denied: token with AccessorID '{accessor_of(secured, APP)}' "
        "lacks permission 'agent:read' on \"n1\""
    )
    assert as_root(secured, "GET", "/v1/agent/self").json()["Config"]["NodeName"] == "n1"


# -- filtering ---------------------------------------------------------------------------


def _seed_lists(double: ConsulDouble) -> None:
    for key in ("app/a", "secret/b"):
        as_root(double, "PUT", f"/v1/kv/{key}", data=b"1")
    for service in ("web", "db"):
        as_root(double, "PUT", "/v1/agent/service/register",
                json={"ID": service, "Name": service,
                      "Check": {"TTL": "10m", "Status": "passing"}})
    for node in ("n1", "n2"):
        as_root(double, "PUT", "/v1/session/create", node=node, json={})


@pytest.mark.parametrize(
    ("path", "visible"),
    [
        ("/v1/kv/?recurse", lambda body: [entry["Key"] for entry in body]),
        ("/v1/kv/?keys", lambda body: body),
        ("/v1/agent/services", lambda body: sorted(body)),
        ("/v1/catalog/services", lambda body: sorted(body)),
        ("/v1/session/list", lambda body: sorted({entry["Node"] for entry in body})),
    ],
    ids=["kv-recurse", "kv-keys", "agent-services", "catalog-services", "session-list"],
)
def test_lists_drop_what_the_token_cannot_read_and_say_so(
    secured: ConsulDouble, path: str, visible: Any
) -> None:
    """§6: list reads filter quietly and set X-Consul-Results-Filtered-By-ACLs: true."""
    _seed_lists(secured)
    expected = {
        "/v1/kv/?recurse": ["app/a"], "/v1/kv/?keys": ["app/a"],
        "/v1/agent/services": ["web"], "/v1/catalog/services": ["web"],
        "/v1/session/list": ["n1"],
    }[path]
    response = call(secured, "GET", path, headers={"X-Consul-Token": APP})
    assert response.status_code == 200, response.text
    assert visible(response.json()) == expected
    assert response.headers[FILTERED] == "true"


def test_health_and_catalog_service_filter_unreadable_services(secured: ConsulDouble) -> None:
    """§6: catalog/health reads of a service the token cannot read answer `[]`, filtered."""
    _seed_lists(secured)
    token = {"X-Consul-Token": APP}
    for path in ("/v1/health/service/db", "/v1/catalog/service/db"):
        response = call(secured, "GET", path, headers=token)
        assert (response.status_code, response.json()) == (200, []), path
        assert response.headers[FILTERED] == "true"
    readable = call(secured, "GET", "/v1/health/service/web?passing", headers=token)
    assert [entry["Service"]["ID"] for entry in readable.json()] == ["web"]
    assert FILTERED not in readable.headers


def test_filtering_without_a_token_sends_no_filtered_header(secured: ConsulDouble) -> None:
    """§0/§6: the header is set only when the request carried a token."""
    _seed_lists(secured)
    response = call(secured, "GET", "/v1/kv/?recurse")
    assert response.status_code == 404  # the anonymous token reads nothing under deny
    assert FILTERED not in response.headers
    services = call(secured, "GET", "/v1/agent/services")
    assert (services.status_code, services.json()) == (200, {})
    assert FILTERED not in services.headers


def test_management_token_sees_everything_unfiltered(secured: ConsulDouble) -> None:
    """§6: nothing is dropped, so no filtered header."""
    _seed_lists(secured)
    response = as_root(secured, "GET", "/v1/kv/?recurse")
    assert [entry["Key"] for entry in response.json()] == ["app/a", "secret/b"]
    assert FILTERED not in response.headers


# -- no leader ----------------------------------------------------------------------------


def test_no_leader_is_a_500_after_the_hold_and_stale_reads_still_work(
    secured: ConsulDouble,
) -> None:
    """§6: `No cluster leader` (500) after rpc_hold_timeout; `?stale` answers, KnownLeader false."""
    as_root(secured, "PUT", "/v1/kv/app/x", data=b"1")
    secured.servers_down()
    token = {"X-Consul-Token": APP}
    for method, path in (("GET", "/v1/kv/app/x"), ("PUT", "/v1/kv/app/x"),
                         ("PUT", "/v1/session/create")):
        response = call(secured, method, path, headers=token, json={})
        assert (response.status_code, response.text) == (500, "No cluster leader"), path
    stale = call(secured, "GET", "/v1/kv/app/x?stale", headers=token)
    assert stale.status_code == 200
    assert stale.headers["X-Consul-KnownLeader"] == "false"
