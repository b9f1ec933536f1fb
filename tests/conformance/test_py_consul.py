"""An unmodified third-party client, py-consul (`import consul`), against the stand-in.

Every call goes through the library exactly as an application would make it: KV with
cas, sessions with acquire/release, blocking reads, agent service registration with a
TTL check and tags, and health queries by tag. A failure here caused by the stand-in is
a stand-in bug. Tests marked `real_consul` also pass against a real agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import consul as py_consul  # type: ignore[import-untyped]  # py-consul ships no types
import pytest

from tests.conformance.conftest import REAL_CONSUL_ADDR, ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem

real_consul = pytest.mark.real_consul


@pytest.fixture
def client(consul: ConsulTarget) -> py_consul.Consul:
    parts = urlsplit(consul.addr)
    return py_consul.Consul(host=parts.hostname, port=parts.port, scheme=parts.scheme)


@pytest.fixture
def sessions(client: py_consul.Consul) -> Iterator[list[str]]:
    """Session IDs to destroy after the test (a real agent outlives it)."""
    created: list[str] = []
    yield created
    for session_id in created:
        client.session.destroy(session_id)


def wait_until_blocked(consul: ConsulTarget, wait_until: WaitUntil) -> None:
    """On the double, prove the read really waits; a real agent cannot tell us."""
    if consul.double is not None:
        double = consul.double
        wait_until(lambda: double.blocked_queries() == 1, message="the read to block")


# -- KV ------------------------------------------------------------------------------


@real_consul
def test_kv_put_get_delete(consul: ConsulTarget, client: py_consul.Consul) -> None:
    key = consul.key("plain")
    assert client.kv.put(key, "hello", flags=7) is True
    index, entry = client.kv.get(key)
    assert entry["Value"] == b"hello"
    assert (entry["Key"], entry["Flags"], entry["LockIndex"]) == (key, 7, 0)
    assert int(index) == entry["ModifyIndex"]
    assert client.kv.delete(key) is True
    assert client.kv.get(key)[1] is None


@real_consul
def test_kv_cas_creates_once_and_then_needs_the_modify_index(
    consul: ConsulTarget, client: py_consul.Consul
) -> None:
    key = consul.key("cas")
    assert client.kv.put(key, "first", cas=0) is True
    assert client.kv.put(key, "again", cas=0) is False
    modify_index = client.kv.get(key)[1]["ModifyIndex"]
    assert client.kv.put(key, "second", cas=modify_index + 1000) is False
    assert client.kv.put(key, "second", cas=modify_index) is True
    assert client.kv.get(key)[1]["Value"] == b"second"
    stale_index = modify_index
    assert client.kv.delete(key, cas=stale_index) is False
    assert client.kv.delete(key, cas=client.kv.get(key)[1]["ModifyIndex"]) is True


@real_consul
def test_kv_recurse_and_keys(consul: ConsulTarget, client: py_consul.Consul) -> None:
    for name in ("dir/a", "dir/b", "dir/sub/c"):
        client.kv.put(consul.key(name), name)
    _, entries = client.kv.get(consul.key("dir/"), recurse=True)
    assert [entry["Key"] for entry in entries] == [
        consul.key("dir/a"), consul.key("dir/b"), consul.key("dir/sub/c")]
    _, keys = client.kv.get(consul.key("dir/"), keys=True, separator="/")
    assert keys == [consul.key("dir/a"), consul.key("dir/b"), consul.key("dir/sub/")]


@real_consul
def test_kv_blocking_get_returns_when_the_key_changes(
    consul: ConsulTarget, client: py_consul.Consul, wait_until: WaitUntil
) -> None:
    key = consul.key("watched")
    client.kv.put(key, "before")
    index, _ = client.kv.get(key)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(client.kv.get, key, index=index, wait="20s")
        wait_until_blocked(consul, wait_until)
        client.kv.put(key, "after")
        new_index, entry = pending.result(timeout=15)
    assert entry["Value"] == b"after"
    assert int(new_index) > int(index)


@real_consul
def test_kv_blocking_get_times_out_with_the_same_data(
    consul: ConsulTarget, client: py_consul.Consul
) -> None:
    key = consul.key("quiet")
    client.kv.put(key, "still")
    index, _ = client.kv.get(key)
    again, entry = client.kv.get(key, index=index, wait="100ms")
    assert (again, entry["Value"]) == (index, b"still")


@real_consul
def test_kv_consistent_read(consul: ConsulTarget, client: py_consul.Consul) -> None:
    key = consul.key("consistent")
    client.kv.put(key, "c")
    assert client.kv.get(key, consistency="consistent")[1]["Value"] == b"c"


# -- sessions and locks ------------------------------------------------------------------


@real_consul
def test_session_lifecycle_with_acquire_and_release(
    consul: ConsulTarget, client: py_consul.Consul, sessions: list[str]
) -> None:
    session_id = client.session.create(name="py-consul", ttl=10, lock_delay=0)
    sessions.append(session_id)
    _, info = client.session.info(session_id)
    assert (info["Name"], info["TTL"], info["LockDelay"], info["Behavior"]) == (
        "py-consul", "10s", 0, "release")
    key = consul.key("lock")
    assert client.kv.put(key, "me", acquire=session_id) is True
    assert client.kv.get(key)[1]["Session"] == session_id
    renewed = client.session.renew(session_id)
    assert (renewed["ID"], renewed["TTL"]) == (session_id, "10s")
    assert client.kv.put(key, "me", release=session_id) is True
    entry = client.kv.get(key)[1]
    assert "Session" not in entry
    assert entry["LockIndex"] == 1
    assert client.session.destroy(session_id) is True
    assert client.session.info(session_id)[1] is None


@real_consul
def test_a_second_session_cannot_take_a_held_lock(
    consul: ConsulTarget, client: py_consul.Consul, sessions: list[str]
) -> None:
    holder = client.session.create(ttl=10, lock_delay=0)
    other = client.session.create(ttl=10, lock_delay=0)
    sessions.extend([holder, other])
    key = consul.key("contended")
    assert client.kv.put(key, "holder", acquire=holder) is True
    assert client.kv.put(key, "other", acquire=other) is False
    assert client.kv.put(key, "other", release=other) is False
    client.session.destroy(holder)
    assert client.kv.put(key, "other", acquire=other) is True
    assert client.kv.get(key)[1]["LockIndex"] == 2


@real_consul
def test_renewing_a_destroyed_session_raises_not_found(
    client: py_consul.Consul,
) -> None:
    session_id = client.session.create(ttl=10)
    client.session.destroy(session_id)
    with pytest.raises(py_consul.NotFound):
        client.session.renew(session_id)


@real_consul
def test_acquire_with_a_destroyed_session_raises(
    consul: ConsulTarget, client: py_consul.Consul
) -> None:
    session_id = client.session.create(ttl=10)
    client.session.destroy(session_id)
    with pytest.raises(py_consul.ConsulException, match="invalid session"):
        client.kv.put(consul.key("lock"), "x", acquire=session_id)


@real_consul
def test_session_list_and_node(
    consul: ConsulTarget, client: py_consul.Consul, sessions: list[str]
) -> None:
    session_id = client.session.create(name="listed")
    sessions.append(session_id)
    assert session_id in {session["ID"] for session in client.session.list()[1]}
    assert session_id in {session["ID"] for session in client.session.node(consul.node)[1]}


# -- agent services, checks, health ------------------------------------------------------


def register(client: py_consul.Consul, consul: ConsulTarget, service_id: str, name: str,
             tags: list[str], **kwargs: Any) -> None:
    consul.track_service(service_id)
    assert client.agent.service.register(
        name, service_id=service_id, tags=tags,
        check=py_consul.Check.ttl("10m") | {"CheckID": f"{service_id}-ttl"}, **kwargs,
    ) is True


@real_consul
def test_service_registration_with_ttl_check_and_tags(
    consul: ConsulTarget, client: py_consul.Consul
) -> None:
    service_id = consul.unique("pg")
    register(client, consul, service_id, "pgpy", ["replica"], port=5432, meta={"a": "b"})
    service = client.agent.services()[service_id]
    assert (service["Service"], service["Tags"], service["Port"], service["Meta"]) == (
        "pgpy", ["replica"], 5432, {"a": "b"})
    checks = client.agent.checks()
    assert checks[f"{service_id}-ttl"]["Status"] == "critical"
    assert client.agent.check.ttl_pass(f"{service_id}-ttl", "ok") is True
    assert client.agent.checks()[f"{service_id}-ttl"]["Output"] == "ok"


@real_consul
def test_health_service_passing_and_tag(consul: ConsulTarget, client: py_consul.Consul) -> None:
    name = consul.unique("hpy")
    primary, replica, sick = (f"{name}-{suffix}" for suffix in ("p", "r", "s"))
    register(client, consul, primary, name, ["primary"])
    register(client, consul, replica, name, ["replica"])
    register(client, consul, sick, name, ["primary"])
    for service_id in (primary, replica):
        client.agent.check.ttl_pass(f"{service_id}-ttl")
    _, nodes = client.health.service(name, passing=True, tag="primary")
    assert [entry["Service"]["ID"] for entry in nodes] == [primary]
    _, everyone = client.health.service(name)
    assert {entry["Service"]["ID"] for entry in everyone} == {primary, replica, sick}


@real_consul
def test_agent_services_with_filter_and_retagging(
    consul: ConsulTarget, client: py_consul.Consul
) -> None:
    service_id = consul.unique("_nomad-task-py")
    register(client, consul, service_id, "retag", ["replica"])
    found = client.agent.services(filter_expr=f'ID matches "^{service_id}$"')
    assert list(found) == [service_id]
    register(client, consul, service_id, "retag", ["primary"])
    assert client.agent.services()[service_id]["Tags"] == ["primary"]
    _, [entry] = client.catalog.service("retag", tag="primary")
    assert entry["ServiceID"] == service_id


@real_consul
def test_deregister_through_the_library(consul: ConsulTarget, client: py_consul.Consul) -> None:
    service_id = consul.unique("bye")
    register(client, consul, service_id, "bye", [])
    assert client.agent.service.deregister(service_id) is True
    assert service_id not in client.agent.services()


def test_acl_denial_raises_acl_permission_denied() -> None:
    """§6 403 → py-consul's ACLPermissionDenied; a token given to the client is used."""
    if REAL_CONSUL_ADDR:
        pytest.skip("needs the Consul double with its own ACL tokens")
    acl = AclSystem(default_policy="deny", tokens={"app": 'key_prefix "app/" { policy = "write" }'})
    with ConsulDouble(nodes=("n1",), acl=acl) as double:
        parts = urlsplit(double.node_addr("n1"))
        client = py_consul.Consul(host=parts.hostname, port=parts.port, token="app")
        assert client.kv.put("app/x", "1") is True
        with pytest.raises(py_consul.ACLPermissionDenied, match="key:write"):
            client.kv.put("other/x", "1")
