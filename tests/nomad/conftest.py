"""Fixtures of the Nomad model's tests: the Consul stand-in over real HTTP, service
clients and Nomad doubles with timings short enough for sub-second tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem
from tests.nomad_double import AclSettings, NomadDouble, ServiceClient, SyncSettings
from tests.nomad_double.consul_api import AgentClient

NODES = ("n1", "n2", "n3")
# Nomad's behaviour with its timings scaled down: 30 s -> 0.5 s and so on. Probation is
# long unless a test is about it, so that it never removes what a test put there.
FAST = SyncSettings(
    period=0.5, probation=60.0, retry_interval=0.1, max_retry_interval=0.5,
    ttl_check_buffer=2.0, request_timeout=1.0, contact_backoff_base=0.05,
    contact_backoff_limit=0.2, shutdown_wait=5.0, ttl_update_backoff=0.05,
)
MANAGEMENT = "management-token"
SIDECAR_RULES = """
key_prefix "consul-leader/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
"""


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble(nodes=NODES, session_ttl_min=1.0, rpc_hold_timeout=0.5) as double:
        yield double


@pytest.fixture
def consul_acl() -> Iterator[ConsulDouble]:
    acl = AclSystem(default_policy="deny", management_tokens=[MANAGEMENT])
    with ConsulDouble(nodes=NODES, session_ttl_min=1.0, rpc_hold_timeout=0.5,
                      acl=acl) as double:
        yield double


@pytest.fixture
def service_client(consul: ConsulDouble) -> Iterator[Callable[..., ServiceClient]]:
    """Start ServiceClients on n1 (or another node) with FAST timings changed by keyword."""
    started: list[ServiceClient] = []

    def start(node: str = "n1", **settings: Any) -> ServiceClient:
        client = ServiceClient(AgentClient(consul.node_addr(node)), replace(FAST, **settings),
                               name=f"test-{node}")
        started.append(client.start())
        return client

    yield start
    for client in started:
        client.abandon()


@pytest.fixture
def nomad_double(consul: ConsulDouble, tmp_path: Path
                 ) -> Iterator[Callable[..., NomadDouble]]:
    """Start NomadDoubles on the stand-in's nodes; keyword arguments change FAST."""
    with contextlib.ExitStack() as stack:
        def start(**settings: Any) -> NomadDouble:
            directory = tmp_path / f"nomad-{uuid.uuid4().hex[:6]}"
            return stack.enter_context(
                NomadDouble.for_consul(consul, directory, sync=replace(FAST, **settings)))

        yield start


@pytest.fixture
def nomad_acl(consul_acl: ConsulDouble, tmp_path: Path) -> Iterator[NomadDouble]:
    acl = AclSettings(consul_acl.control_addr, MANAGEMENT, SIDECAR_RULES)
    with NomadDouble.for_consul(consul_acl, tmp_path / "nomad", sync=FAST, acl=acl) as nomad:
        yield nomad


def agent_get(consul: ConsulDouble, node: str, path: str, token: str | None = None
              ) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    return requests.get(f"{consul.node_addr(node)}{path}", headers=headers, timeout=2)


def agent_put(consul: ConsulDouble, node: str, path: str, body: Any = None,
              token: str | None = None) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    reply = requests.put(f"{consul.node_addr(node)}{path}", json=body, headers=headers,
                         timeout=2)
    reply.raise_for_status()
    return reply
