"""Conformance of blocking queries (consul-semantics.md §3).

A blocking GET runs on a worker thread while the test changes (or pointedly
does not change) what it watches. "Answers at timeout" is shown by the index
staying the same, or, where the index may move, by the answer not coming
before the wait elapsed (a lower bound only: no timing budgets).
Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.conformance.conftest import ConsulTarget, WaitUntil
from tests.consul_double import ConsulDouble
from tests.consul_double.api.common import blocking_timeout

real_consul = pytest.mark.real_consul
ANSWER_TIMEOUT = 10.0  # how long a test waits for a blocking answer it expects


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def blocking_get(
    consul: ConsulTarget, executor: ThreadPoolExecutor, path: str
) -> Future[tuple[requests.Response, float]]:
    """Start `GET path` on a worker; the future gives the response and its duration."""

    def run() -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = requests.get(consul.addr + path, timeout=ANSWER_TIMEOUT + 5)
        return response, time.monotonic() - started

    return executor.submit(run)


def index_of(response: requests.Response) -> int:
    return int(response.headers["X-Consul-Index"])


def answer(future: Future[tuple[requests.Response, float]]) -> tuple[requests.Response, float]:
    return future.result(timeout=ANSWER_TIMEOUT)


# -- parameters ----------------------------------------------------------------


@real_consul
def test_without_index_the_query_does_not_block(consul: ConsulTarget) -> None:
    """§3: no `index` → answer at once, whatever `wait` says (else the client times out)."""
    key = consul.key("k")
    consul.put(f"/v1/kv/{key}", data=b"x")
    response = consul.get(f"/v1/kv/{key}?wait=1m", timeout=5)
    assert response.status_code == 200


@real_consul
def test_index_zero_does_not_block(consul: ConsulTarget) -> None:
    """§3: `index=0` → answer at once."""
    response = consul.get(f"/v1/kv/{consul.key('none')}?index=0&wait=1m", timeout=5)
    assert response.status_code == 404


@real_consul
@pytest.mark.parametrize(
    ("query", "error"),
    [("index=1&wait=soon", "Invalid wait time"), ("index=-1", "Invalid index"),
     ("index=abc&wait=500ms", "Invalid index"), ("index=1&wait=10", "Invalid wait time")],
)
def test_bad_wait_or_index_is_a_400(consul: ConsulTarget, query: str, error: str) -> None:
    """§3: an unparsable `wait` or `index` → 400 with Consul's text."""
    consul.assert_error(consul.get(f"/v1/kv/{consul.key('k')}?{query}"), 400, error)


def test_index_is_never_zero(consul: ConsulTarget, double: ConsulDouble) -> None:
    """§3: X-Consul-Index 0 is sent as 1 (a fresh store has no KV index yet)."""
    response = consul.get("/v1/kv/never-written")
    assert response.status_code == 404
    assert response.headers["X-Consul-Index"] == "1"


# -- single key ----------------------------------------------------------------


@real_consul
def test_write_to_the_key_ends_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: a change to the watched entry answers at once with a higher index."""
    key = consul.key("watched")
    consul.put(f"/v1/kv/{key}", data=b"before")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=30s")
    consul.put(f"/v1/kv/{key}", data=b"after")
    response, _ = answer(pending)
    assert response.status_code == 200
    assert index_of(response) > index
    assert response.json()[0]["Value"] == "YWZ0ZXI="


@real_consul
def test_identical_rewrite_does_not_end_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3/§2.3: an equal write changes nothing: the answer comes at timeout, same index."""
    key = consul.key("unchanged")
    consul.put(f"/v1/kv/{key}", data=b"same")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms")
    consul.put(f"/v1/kv/{key}", data=b"same")
    response, _ = answer(pending)
    assert response.status_code == 200
    assert index_of(response) == index


@real_consul
def test_write_to_another_key_does_not_end_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: only a change to the watched entry wakes a single-key query."""
    key = consul.key("mine")
    consul.put(f"/v1/kv/{key}", data=b"x")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms")
    consul.put(f"/v1/kv/{consul.key('other')}", data=b"y")
    response, _ = answer(pending)
    assert index_of(response) == index


@real_consul
def test_timeout_answers_200_with_the_current_data(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: no 304: at the end of `wait` the answer is a normal 200, not before `wait`."""
    key = consul.key("quiet")
    consul.put(f"/v1/kv/{key}", data=b"x")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    response, duration = answer(
        blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms"))
    assert (response.status_code, index_of(response)) == (200, index)
    assert response.json()[0]["Value"] == "eA=="
    assert duration >= 0.5


@real_consul
def test_index_ahead_of_the_server_blocks_until_timeout(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: an index higher than the current one simply blocks until the wait ends."""
    key = consul.key("ahead")
    consul.put(f"/v1/kv/{key}", data=b"x")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    response, duration = answer(
        blocking_get(consul, background, f"/v1/kv/{key}?index={index + 1000}&wait=500ms"))
    assert response.status_code == 200
    assert duration >= 0.5


@real_consul
def test_delete_ends_the_wait_with_a_404(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: deleting the watched key answers 404 with the delete's index."""
    key = consul.key("deleted")
    consul.put(f"/v1/kv/{key}", data=b"x")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=30s")
    consul.delete(f"/v1/kv/{key}")
    response, _ = answer(pending)
    assert response.status_code == 404
    assert index_of(response) > index


@real_consul
def test_creating_a_missing_key_ends_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3 missing-key rule: a wait on a missing key ends when the key is created."""
    key = consul.key("appearing")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=30s")
    consul.put(f"/v1/kv/{key}", data=b"here")
    response, _ = answer(pending)
    assert response.status_code == 200
    assert response.json()[0]["Key"] == key


def test_other_writes_do_not_end_a_wait_on_a_missing_key(
    consul: ConsulTarget, double: ConsulDouble, background: ThreadPoolExecutor,
    wait_until: WaitUntil,
) -> None:
    """§3 missing-key rule: unrelated writes raise the bar instead of answering.

    Double only: the writes must land while the query blocks (a write before it
    arrives would rightly answer at once), and only the double shows that it does.
    """
    key = consul.key("still-missing")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms")
    wait_until(lambda: double.state.blocked_queries() == 1, message="the query to block")
    for number in range(3):
        consul.put(f"/v1/kv/{consul.key(f'noise-{number}')}", data=b"n")
    response, duration = answer(pending)
    assert response.status_code == 404
    assert duration >= 0.5


@real_consul
def test_acquire_and_release_end_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: acquire and release change the entry, so both wake a watcher."""
    key = consul.key("lock")
    consul.put(f"/v1/kv/{key}")
    session_id = consul.create_session()
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=30s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}")
    acquired, _ = answer(pending)
    assert acquired.json()[0]["Session"] == session_id
    pending = blocking_get(
        consul, background, f"/v1/kv/{key}?index={index_of(acquired)}&wait=30s")
    consul.put(f"/v1/kv/{key}?release={session_id}")
    released, _ = answer(pending)
    assert "Session" not in released.json()[0]


@real_consul
def test_session_invalidation_ends_the_wait_on_its_key(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3/§1.5: destroying the holder releases the key, which wakes its watchers."""
    key = consul.key("held")
    session_id = consul.create_session(LockDelay="0s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=30s")
    consul.put(f"/v1/session/destroy/{session_id}")
    response, _ = answer(pending)
    assert index_of(response) > index
    assert "Session" not in response.json()[0]


@real_consul
def test_renew_does_not_end_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: session renewals never touch KV."""
    key = consul.key("renewed-holder")
    session_id = consul.create_session(TTL="30s")
    consul.put(f"/v1/kv/{key}?acquire={session_id}")
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms")
    consul.put(f"/v1/session/renew/{session_id}")
    response, _ = answer(pending)
    assert index_of(response) == index


@real_consul
def test_destroying_an_unrelated_session_does_not_end_the_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: a session that holds nothing on the key changes nothing there."""
    key = consul.key("unrelated")
    holder = consul.create_session()
    consul.put(f"/v1/kv/{key}?acquire={holder}")
    bystander = consul.create_session()
    index = index_of(consul.get(f"/v1/kv/{key}"))
    pending = blocking_get(consul, background, f"/v1/kv/{key}?index={index}&wait=500ms")
    consul.put(f"/v1/session/destroy/{bystander}")
    response, _ = answer(pending)
    assert index_of(response) == index


# -- lists ---------------------------------------------------------------------


@real_consul
def test_recurse_wakes_for_a_write_under_the_prefix(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: `?recurse` blocking answers when any entry under the prefix changes."""
    prefix = consul.key("dir/")
    consul.put(f"/v1/kv/{prefix}a", data=b"1")
    index = index_of(consul.get(f"/v1/kv/{prefix}?recurse"))
    pending = blocking_get(consul, background, f"/v1/kv/{prefix}?recurse&index={index}&wait=30s")
    consul.put(f"/v1/kv/{prefix}b", data=b"2")
    response, _ = answer(pending)
    assert [entry["Key"] for entry in response.json()] == [prefix + "a", prefix + "b"]


@real_consul
def test_keys_wait_ignores_writes_outside_the_prefix(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: a `?keys` watcher is not answered by a write elsewhere."""
    prefix = consul.key("keys/")
    consul.put(f"/v1/kv/{prefix}a")
    index = index_of(consul.get(f"/v1/kv/{prefix}?keys"))
    pending = blocking_get(consul, background, f"/v1/kv/{prefix}?keys&index={index}&wait=500ms")
    consul.put(f"/v1/kv/{consul.key('elsewhere')}")
    response, _ = answer(pending)
    assert index_of(response) == index


# -- sessions ------------------------------------------------------------------


@real_consul
def test_session_info_wait_ends_when_it_is_destroyed(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§1.3/§3: info blocks on the session and answers `[]` once it is gone."""
    session_id = consul.create_session()
    index = index_of(consul.get(f"/v1/session/info/{session_id}"))
    pending = blocking_get(
        consul, background, f"/v1/session/info/{session_id}?index={index}&wait=30s")
    consul.put(f"/v1/session/destroy/{session_id}")
    response, _ = answer(pending)
    assert response.json() == []
    assert index_of(response) > index


@real_consul
def test_session_list_wait_ends_when_a_session_is_created(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: list blocks on the sessions table."""
    index = index_of(consul.get("/v1/session/list"))
    pending = blocking_get(consul, background, f"/v1/session/list?index={index}&wait=30s")
    session_id = consul.create_session()
    response, _ = answer(pending)
    assert session_id in [session["ID"] for session in response.json()]


@real_consul
def test_session_node_wait_ends_when_a_session_of_the_node_is_created(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: node blocks on that node's sessions."""
    path = f"/v1/session/node/{consul.node}"
    index = index_of(consul.get(path))
    pending = blocking_get(consul, background, f"{path}?index={index}&wait=30s")
    session_id = consul.create_session()
    response, _ = answer(pending)
    assert session_id in [session["ID"] for session in response.json()]


# -- catalog and health --------------------------------------------------------


def _register_web(consul: ConsulTarget, tags: list[str]) -> dict[str, Any]:
    name = f"web-{consul.prefix.split('/')[1]}"
    definition: dict[str, Any] = {
        "ID": name, "Name": name, "Tags": tags, "Port": 8080,
        "Check": {"CheckID": f"{name}-ttl", "TTL": "10m", "Status": "passing"},
    }
    consul.register_service(definition)
    return definition


@real_consul
def test_health_service_wait_ends_when_a_check_changes(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3/§5: a check status change moves the service's index."""
    web = _register_web(consul, ["blue"])
    path = f"/v1/health/service/{web['Name']}"
    index = index_of(consul.get(path))
    pending = blocking_get(consul, background, f"{path}?index={index}&wait=30s")
    consul.put(f"/v1/agent/check/fail/{web['Check']['CheckID']}?note=down")
    response, _ = answer(pending)
    statuses = {check["CheckID"]: check["Status"] for check in response.json()[0]["Checks"]}
    assert statuses[web["Check"]["CheckID"]] == "critical"


@real_consul
def test_catalog_service_wait_ends_when_tags_change(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3/§5: re-registering with other tags moves the service's index."""
    web = _register_web(consul, ["blue"])
    path = f"/v1/catalog/service/{web['Name']}"
    index = index_of(consul.get(path))
    pending = blocking_get(consul, background, f"{path}?index={index}&wait=30s")
    _register_web(consul, ["green"])
    response, _ = answer(pending)
    assert response.json()[0]["ServiceTags"] == ["green"]


@real_consul
def test_identical_reregistration_does_not_end_a_health_wait(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3/§4.3: re-registering the same definition changes nothing in the catalog."""
    web = _register_web(consul, ["blue"])
    path = f"/v1/health/service/{web['Name']}"
    index = index_of(consul.get(path))
    pending = blocking_get(consul, background, f"{path}?index={index}&wait=500ms")
    _register_web(consul, ["blue"])
    response, _ = answer(pending)
    assert index_of(response) == index


# -- hash blocking -------------------------------------------------------------


@real_consul
def test_agent_service_hash_is_in_header_and_body(consul: ConsulTarget) -> None:
    """§3/§4.2: X-Consul-ContentHash equals the body's ContentHash."""
    web = _register_web(consul, ["blue"])
    response = consul.get(f"/v1/agent/service/{web['ID']}")
    assert response.headers["X-Consul-ContentHash"] == response.json()["ContentHash"]


@real_consul
def test_agent_service_hash_wait_ends_when_the_definition_changes(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: `?hash=<last>&wait=` answers once the service definition changes."""
    web = _register_web(consul, ["blue"])
    first = consul.get(f"/v1/agent/service/{web['ID']}").headers["X-Consul-ContentHash"]
    pending = blocking_get(
        consul, background, f"/v1/agent/service/{web['ID']}?hash={first}&wait=30s")
    _register_web(consul, ["green"])
    response, _ = answer(pending)
    assert response.json()["Tags"] == ["green"]
    assert response.headers["X-Consul-ContentHash"] != first


@real_consul
def test_agent_service_hash_wait_ignores_identical_reregistration(
    consul: ConsulTarget, background: ThreadPoolExecutor
) -> None:
    """§3: the same definition has the same hash; the answer comes at timeout."""
    web = _register_web(consul, ["blue"])
    first = consul.get(f"/v1/agent/service/{web['ID']}").headers["X-Consul-ContentHash"]
    pending = blocking_get(
        consul, background, f"/v1/agent/service/{web['ID']}?hash={first}&wait=500ms")
    _register_web(consul, ["blue"])
    response, duration = answer(pending)
    assert response.headers["X-Consul-ContentHash"] == first
    assert duration >= 0.5


@real_consul
def test_agent_service_with_a_stale_hash_answers_at_once(consul: ConsulTarget) -> None:
    """§3: a hash that differs from the current one answers immediately."""
    web = _register_web(consul, ["blue"])
    response = consul.get(f"/v1/agent/service/{web['ID']}?hash=0000&wait=1m", timeout=5)
    assert response.status_code == 200


def test_agent_service_deregistered_during_a_wait_answers_404(
    consul: ConsulTarget, double: ConsulDouble, background: ThreadPoolExecutor
) -> None:
    """§4.2: the service vanishing ends a hash wait with 404 `unknown service ID`."""
    web = _register_web(consul, ["blue"])
    first = consul.get(f"/v1/agent/service/{web['ID']}").headers["X-Consul-ContentHash"]
    pending = blocking_get(
        consul, background, f"/v1/agent/service/{web['ID']}?hash={first}&wait=30s")
    consul.put(f"/v1/agent/service/deregister/{web['ID']}")
    response, _ = answer(pending)
    consul.assert_error(response, 404, f"unknown service ID: {web['ID']}")


@pytest.mark.parametrize(
    ("wait", "low", "high"),
    [(None, 300.0, 300.0 * 17 / 16), (0.0, 300.0, 318.75), (1.0, 1.0, 1.0625),
     (1200.0, 600.0, 637.5)],
)
def test_wait_defaults_to_five_minutes_caps_at_ten_and_adds_jitter(
    double: ConsulDouble, wait: float | None, low: float, high: float
) -> None:
    """§3: missing or <=0 wait is 5m, more than 10m is 10m, then jitter up to wait/16."""
    timeouts = [blocking_timeout(wait) for _ in range(200)]
    assert all(low <= timeout <= high for timeout in timeouts)
    assert len(set(timeouts)) > 1 or low == high
