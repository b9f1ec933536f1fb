"""Conformance of `?dc=` and of `/v1/agent/self` Stats (docs/consul-semantics-addendum.md §12).

A request naming a datacenter the servers do not know answers 500 `No path to datacenter`
(consul agent/consul/rpc.go, structs.ErrNoDCPath); agent-local endpoints ignore `dc`.
`Stats.consul` is Client.Stats or Server.Stats (agent/consul/client.go, server.go): every
value a string. Tests marked `real_consul` also pass against a real agent (conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.conftest import (
    DOUBLE_RPC_HOLD_TIMEOUT,
    DOUBLE_SESSION_TTL_MIN,
    REAL_CONSUL_ADDR,
    ConsulTarget,
)
from tests.consul_double import ConsulDouble

real_consul = pytest.mark.real_consul
NO_DC_PATH = "No path to datacenter"
OTHER_DC = "nowhere-dc"

# Every endpoint the stand-in serves that takes `dc` (method, path with {key}/{node}).
DC_ENDPOINTS = [
    ("GET", "/v1/kv/{key}"),
    ("GET", "/v1/kv/{key}?recurse"),
    ("GET", "/v1/kv/{key}?keys"),
    ("PUT", "/v1/kv/{key}"),
    ("DELETE", "/v1/kv/{key}"),
    ("PUT", "/v1/session/create"),
    ("PUT", "/v1/session/renew/{session}"),
    ("PUT", "/v1/session/destroy/{session}"),
    ("GET", "/v1/session/info/{session}"),
    ("GET", "/v1/session/list"),
    ("GET", "/v1/session/node/{node}"),
    ("GET", "/v1/catalog/services"),
    ("GET", "/v1/catalog/nodes"),
    ("GET", "/v1/catalog/service/consul"),
    ("GET", "/v1/health/service/consul"),
    ("GET", "/v1/health/checks/consul"),
    ("GET", "/v1/health/node/{node}"),
    ("GET", "/v1/health/state/any"),
    ("GET", "/v1/status/leader"),
    ("GET", "/v1/status/peers"),
]


def _path(consul: ConsulTarget, template: str, session_id: str) -> str:
    return template.format(key=consul.key("k"), node=consul.node, session=session_id)


@real_consul
@pytest.mark.parametrize(("method", "template"), DC_ENDPOINTS)
def test_another_datacenter_has_no_path(consul: ConsulTarget, method: str, template: str) -> None:
    """§12.1: 500 `No path to datacenter` on every server-bound endpoint."""
    session_id = consul.create_session()
    path = _path(consul, template, session_id)
    separator = "&" if "?" in path else "?"
    response = consul.http.request(method, f"{consul.addr}{path}{separator}dc={OTHER_DC}",
                                   timeout=30)
    consul.assert_error(response, 500, NO_DC_PATH)


@real_consul
@pytest.mark.parametrize(("method", "template"), DC_ENDPOINTS)
def test_the_local_datacenter_by_name_works(
    consul: ConsulTarget, method: str, template: str
) -> None:
    """§12.1: naming the agent's own datacenter changes nothing."""
    datacenter = consul.get("/v1/agent/self").json()["Config"]["Datacenter"]
    session_id = consul.create_session()
    path = _path(consul, template, session_id)
    separator = "&" if "?" in path else "?"
    response = consul.http.request(method, f"{consul.addr}{path}{separator}dc={datacenter}",
                                   timeout=30)
    assert response.status_code in (200, 404), (response.status_code, response.text)


@real_consul
def test_a_session_cannot_be_created_in_another_datacenter(consul: ConsulTarget) -> None:
    """§12.1: what py-consul's session test expects of `session.create(dc="dc2")`."""
    response = consul.put(f"/v1/session/create?dc={OTHER_DC}", json={"Name": "x"})
    consul.assert_error(response, 500, NO_DC_PATH)
    assert consul.get(f"/v1/session/node/{consul.node}").json() == []


@real_consul
@pytest.mark.parametrize("path", ["/v1/agent/self", "/v1/agent/services", "/v1/agent/checks"])
def test_agent_endpoints_ignore_dc(consul: ConsulTarget, path: str) -> None:
    """§12.1: the agent answers its local endpoints itself."""
    assert consul.get(f"{path}?dc={OTHER_DC}").status_code == 200


def test_a_client_agent_reports_client_stats(consul: ConsulTarget, double: ConsulDouble) -> None:
    """§12.2: Client.Stats: `server` "false" and `known_servers`, no leader fields."""
    stats = consul.get("/v1/agent/self").json()["Stats"]
    assert stats["consul"] == {"acl": "disabled", "known_servers": "1", "server": "false"}
    assert stats["agent"]["services"] == "0"
    assert consul.get("/v1/agent/self").json()["Config"]["Server"] is False


@pytest.fixture
def server_consul() -> Iterator[ConsulTarget]:
    """A real agent (a `-dev` agent is the leading server), or a double whose n1 is one."""
    if REAL_CONSUL_ADDR:
        target = ConsulTarget(REAL_CONSUL_ADDR, None)
        yield target
        target.cleanup()
        return
    with ConsulDouble(nodes=("n1", "n2"), servers=("n1",),
                      session_ttl_min=DOUBLE_SESSION_TTL_MIN,
                      rpc_hold_timeout=DOUBLE_RPC_HOLD_TIMEOUT) as double:
        target = ConsulTarget(double.node_addr("n1"), double)
        yield target
        target.http.close()


@real_consul
def test_the_leading_server_reports_itself_leader(server_consul: ConsulTarget) -> None:
    """§12.2: Server.Stats: strings "true"/"false"; leader_addr is what /v1/status/leader
    answers and is among /v1/status/peers (py-consul's status tests rely on both)."""
    agent_self = server_consul.get("/v1/agent/self").json()
    consul_stats = agent_self["Stats"]["consul"]
    assert agent_self["Config"]["Server"] is True
    assert (consul_stats["server"], consul_stats["leader"]) == ("true", "true")
    assert consul_stats["known_datacenters"] == "1"
    assert all(isinstance(value, str) for value in consul_stats.values())
    assert consul_stats["leader_addr"] == server_consul.get("/v1/status/leader").json()
    assert consul_stats["leader_addr"] in server_consul.get("/v1/status/peers").json()


def test_a_server_without_leader_says_so(server_consul: ConsulTarget) -> None:
    """§12.2: during the servers-down fault: leader "false", leader_addr ""."""
    double = server_consul.double
    if double is None:
        pytest.skip("needs the Consul double")
    double.servers_down()
    consul_stats = server_consul.get("/v1/agent/self").json()["Stats"]["consul"]
    assert (consul_stats["leader"], consul_stats["leader_addr"]) == ("false", "")
    double.servers_up()
    consul_stats = server_consul.get("/v1/agent/self").json()["Stats"]["consul"]
    assert (consul_stats["leader"], consul_stats["leader_addr"]) == ("true", "127.0.0.1:8300")


def test_a_server_that_does_not_lead_is_a_follower(server_consul: ConsulTarget) -> None:
    """§12.2: a second server node reports leader "false" and the leader's address."""
    double = server_consul.double
    if double is None:
        pytest.skip("needs the Consul double")
    with ConsulDouble(nodes=("n1", "n2"), servers=("n1", "n2")) as two_servers:
        follower = ConsulTarget(two_servers.node_addr("n2"), two_servers)
        consul_stats = follower.get("/v1/agent/self").json()["Stats"]["consul"]
        follower.http.close()
    assert (consul_stats["leader"], consul_stats["leader_addr"]) == ("false", "127.0.0.1:8300")
