"""A Nomad client agent on one node: its Consul service client and its allocations.

nomad: command/agent/agent.go (setupConsuls starts the service client before setupClient
restores allocations), client/client.go (restoreState, Shutdown: allocations keep
running), command/agent/consul/service_client.go (a new ServiceClient, hence a new
probation, on every start).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .alloc_runner import Allocation
from .compare import SYNC_PERIODIC
from .consul_api import AclControl, AgentClient
from .jobspec import Job
from .service_client import ServiceClient, SyncSettings

FIRST_SYNC_TIMEOUT = 10.0


def service_identity_rules(service: str) -> str:
    """What Consul's service identity grants (a `service_identity` templated policy):
    write on the service and its sidecar proxy, read on every service and node."""
    return (f'service "{service}" {{ policy = "write" }}\n'
            f'service "{service}-sidecar-proxy" {{ policy = "write" }}\n'
            'service_prefix "" { policy = "read" }\n'
            'node_prefix "" { policy = "read" }\n')


@dataclass(frozen=True)
class AclSettings:
    """Consul ACLs are on: the Nomad agent's own token, where tokens are made, and the
    rules of the tokens workload identities log in to (task tokens: the caller's policy;
    service tokens: a service identity unless `service_rules` is given)."""

    control: str  # the stand-in's control address
    agent_token: str
    task_rules: str
    service_rules: str | None = None

    def new_token(self, rules: str) -> str:
        secret = str(uuid.uuid4())
        AclControl(self.control).create(secret, rules)
        return secret

    def revoke(self, secret: str) -> None:
        AclControl(self.control).revoke(secret)

    def service_rules_for(self, service: str) -> str:
        return self.service_rules if self.service_rules is not None else (
            service_identity_rules(service))


@dataclass(frozen=True)
class NodeConfig:
    """One Nomad client node. `meta` is client `meta`, visible to jobs as ${meta.<key>};
    `consul_http_addr` defaults to the node's Consul agent (point it at a proxy to put
    faults between a task and Consul)."""

    name: str
    consul: str  # this node's Consul agent, http://host:port
    address: str = "127.0.0.1"  # the host network address services advertise
    meta: Mapping[str, str] = field(default_factory=dict)


class NomadClient:
    """One node's Nomad client. Allocations are placed on it by NomadDouble."""

    def __init__(self, node: NodeConfig, data_dir: Path, settings: SyncSettings,
                 acl: AclSettings | None, host_env: Mapping[str, str],
                 rng: random.Random) -> None:
        self.node = node
        self.name = node.name
        self.address = node.address
        self.data_dir = data_dir
        self.settings = settings
        self.acl = acl
        self.host_env = dict(host_env)
        self.eligible = True
        self.allocations: dict[str, Allocation] = {}
        self.restarts = 0
        self._rng = rng
        self._lock = threading.Lock()
        self.service_client = self._new_service_client()

    def node_attributes(self) -> dict[str, str]:
        attributes = {"node.unique.name": self.name, "node.unique.id": self.name,
                      "attr.unique.network.ip-address": self.address,
                      "meta.consul_http_addr": self.node.consul}
        attributes.update({f"meta.{key}": value for key, value in self.node.meta.items()})
        return attributes

    def start(self) -> None:
        self.service_client.start()

    @property
    def up(self) -> bool:
        """The agent runs (between restart()'s shutdown and start it does not)."""
        return self.service_client.running

    def place(self, job: Job, group: str, index: int, canary: bool = False) -> Allocation:
        """The servers place an allocation here: it starts at once (non-blocking)."""
        allocation = Allocation(self, job, job.group(group), index, canary=canary,
                                rng=random.Random(self._rng.random()))
        with self._lock:
            self.allocations[allocation.id] = allocation
        allocation.run()
        return allocation

    def live_allocations(self) -> list[Allocation]:
        with self._lock:
            return [a for a in self.allocations.values()
                    if a.desired_status == "run" and not a.finished]

    def restart(self, downtime: float = 0.0, graceful: bool = True) -> None:
        """The Nomad agent stops and starts again; its tasks keep running.

        Graceful: allocation runners stop watching, the service client makes its last
        sync (ServiceClient.Shutdown; task services stay in Consul). Not graceful: the
        process dies without that sync. After `downtime`, a new service client (empty
        stored copy, new probation) contacts Consul and syncs once (periodic; it runs
        before the allocations are restored, agent.go setupConsuls before setupClient);
        then every allocation is restored: its services are registered again from the
        jobspec, which queues operations syncs (no tag adoption)."""
        for allocation in self.live_allocations():
            allocation.shutdown()
        if graceful:
            self.service_client.shutdown()
        else:
            self.service_client.abandon()
        if downtime > 0:
            time.sleep(downtime)  # the agent is away for this long
        self.restarts += 1
        self.service_client = self._new_service_client()
        started = time.monotonic()
        self.service_client.start()
        self.service_client.wait_for_sync(started, FIRST_SYNC_TIMEOUT, SYNC_PERIODIC)
        for allocation in self.live_allocations():
            allocation.restore()

    def close(self) -> None:
        """Stop watching (tasks should have been stopped already) and end the sync loop
        after its last sync (bounded by shutdown_wait)."""
        for allocation in self.live_allocations():
            allocation.shutdown()
        self.service_client.shutdown()

    def _new_service_client(self) -> ServiceClient:
        agent = AgentClient(self.node.consul, self.acl.agent_token if self.acl else None,
                            self.settings.request_timeout)
        return ServiceClient(agent, self.settings, name=f"nomad-{self.name}")
