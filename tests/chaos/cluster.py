"""A chaos cluster: the Consul stand-in, one sidecar per node behind its own fault proxy, and
the observer, started and stopped together.

Layout: node `obs` hosts no sidecar; the observer and the scenarios talk to Consul through it,
so faults injected on the sidecars' nodes never blind the measurement. Nodes `n1..nk` each
host one Nomad-like task (a service registered as Nomad does) and its sidecar, whose
`CONSUL_HTTP_ADDR` is that node's proxy. With ACLs on, every sidecar has its own token in its
own `CONSUL_HTTP_TOKEN_FILE`, so one of them can be revoked alone.

Guarantees: leaving the `with` block stops the observer, then every sidecar (SIGCONT, SIGTERM,
SIGKILL after 8 s), then the proxies and the stand-in, even when the block raised; every
process exit is recorded in `exits` for the crash count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.chaos import analysis
from tests.chaos.observer import Observer
from tests.chaos.proxy import FaultProxy
from tests.chaos.timeline import LEADER, Timeline
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem
from tests.harness import Sidecar, free_port, nomad_service_id, register_like_nomad, wait_for

OBSERVER_NODE = "obs"
STOP_TIMEOUT = 8.0
# The sufficient policy of the brief: the lock, sessions, services (tags, checks), node reads.
SIDECAR_RULES = """
key_prefix "consul-leader/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
"""


@dataclass(frozen=True)
class ClusterSettings:
    nodes: int = 3
    ttl: float = 3.0
    sleep: float = 1.0
    lock_delay: float = 0.0
    acl: bool = False
    service: str = "db"
    primary_label: str = "primary"
    replica_label: str = "replica"

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(f"n{i}" for i in range(1, self.nodes + 1))


@dataclass(frozen=True)
class ProcessExit:
    """How one sidecar process ended; `signalled` is the last stop signal we sent it."""

    name: str
    code: int | None
    signalled: str | None

    @property
    def crashed(self) -> bool:
        if self.signalled == "SIGKILL":
            return False
        if self.signalled == "SIGTERM":
            return self.code != 0
        return True  # it ended although nobody asked it to (or it would not end at all)


@dataclass
class ChaosCluster:
    workdir: Path
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    consul: ConsulDouble = field(init=False)
    proxies: dict[str, FaultProxy] = field(init=False, default_factory=dict)
    sidecars: list[Sidecar] = field(init=False, default_factory=list)
    timeline: Timeline = field(init=False)
    observer: Observer = field(init=False)
    exits: list[ProcessExit] = field(init=False, default_factory=list)
    management_token: str | None = field(init=False, default=None)
    _tokens: dict[str, str] = field(init=False, default_factory=dict)
    _signalled: dict[str, str] = field(init=False, default_factory=dict)
    _stack: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ChaosCluster:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        acl = None
        if self.settings.acl:
            self.management_token = str(uuid.uuid4())
            acl = AclSystem(default_policy="deny", management_tokens=[self.management_token])
        self.consul = self._stack.enter_context(ConsulDouble(
            nodes=(OBSERVER_NODE, *self.settings.node_names), session_ttl_min=1.0,
            rpc_hold_timeout=0.5, acl=acl,
        ))
        self._stack.callback(self._close_proxies)
        for node in self.settings.node_names:
            self.proxies[node] = FaultProxy(self.consul.node_addr(node), f"proxy-{node}").start()
        self._stack.callback(self._stop_sidecars)
        for index, node in enumerate(self.settings.node_names):
            self.sidecars.append(self._new_sidecar(index, node))
        for sidecar in self.sidecars:
            sidecar.start()
        self.timeline = Timeline(
            lanes=[s.name for s in self.sidecars],
            owners={s.published_id: s.name for s in self.sidecars},
            lane_labels={s.name: f"{s.name} on node {s.node}" for s in self.sidecars},
        )
        self.observer = Observer(
            self.timeline,
            f"{self.consul.node_addr(OBSERVER_NODE)}/v1/health/service/{self.settings.service}",
            self.settings.primary_label, self.sidecars, token=self.management_token,
        )
        self._stack.callback(self.observer.stop)
        self.observer.__enter__()

    def _new_sidecar(self, index: int, node: str) -> Sidecar:
        alloc_id = str(uuid.uuid4())
        service_id = nomad_service_id(alloc_id, "db", self.settings.service)
        agent = self.consul.node_addr(node)
        register_like_nomad(agent, service_id, self.settings.service, 5432 + index,
                            token=self.management_token)
        port = free_port()
        alloc_dir = self.workdir / f"alloc-{index}"
        alloc_dir.mkdir(parents=True, exist_ok=True)
        name = f"s{index}"
        env = self._sidecar_env(name, node, alloc_id, alloc_dir, port)
        return Sidecar(name, node, agent, alloc_id, service_id, port, env,
                       self.workdir / f"sidecar-{index}.log")

    def _sidecar_env(self, name: str, node: str, alloc_id: str, alloc_dir: Path,
                     port: int) -> dict[str, str]:
        s = self.settings
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "CONSUL_HTTP_ADDR": self.proxies[node].url,
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_ALLOC_DIR": str(alloc_dir),
            "CONSUL_LEADER_SERVICE_NAME": s.service,
            "CONSUL_LEADER_PRIMARY_LABEL": s.primary_label,
            "CONSUL_LEADER_REPLICA_LABEL": s.replica_label,
            "CONSUL_LEADER_TTL": f"{s.ttl:g}s",
            "CONSUL_LEADER_SLEEP": f"{s.sleep:g}",
            "CONSUL_LEADER_LOCKDELAY": f"{s.lock_delay:g}s",
            "CONSUL_LEADER_LOG_LEVEL": "debug",
            "CONSUL_LEADER_LISTEN": f"127.0.0.1:{port}",
        }
        if s.acl:
            env["CONSUL_HTTP_TOKEN_FILE"] = str(self._token_file(name))
            self._write_token(name, self._new_token())
        return env

    def _close_proxies(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()

    def _stop_sidecars(self) -> None:
        observer = getattr(self, "observer", None)  # absent when start-up failed early
        if observer is not None:
            observer.stop()
        running = [s for s in self.sidecars if s.running()]
        for sidecar in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sidecar.pid, signal.SIGCONT)
                self.signal(sidecar, signal.SIGTERM)
        for sidecar in self.sidecars:
            self._reap(sidecar)

    def _reap(self, sidecar: Sidecar) -> None:
        process = sidecar.process
        if process is None:
            return
        try:
            code: int | None = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None  # it ignored SIGTERM: counted as a crash
        self.exits.append(ProcessExit(sidecar.name, code, self._signalled.pop(sidecar.name, None)))
        sidecar.process = None

    # -- acting on sidecars ------------------------------------------------------------------

    def signal(self, sidecar: Sidecar, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self._signalled[sidecar.name] = sig.name
        assert sidecar.process is not None
        sidecar.process.send_signal(sig)

    def restart(self, sidecar: Sidecar) -> None:
        """Start the task's sidecar again, as Nomad's restart policy does (same allocation)."""
        self._reap(sidecar)
        sidecar.start()

    def sidecar(self, name: str) -> Sidecar:
        return next(s for s in self.sidecars if s.name == name)

    def sidecar_of_service(self, service_id: str) -> Sidecar | None:
        """The sidecar whose published instance is `service_id`."""
        return next((s for s in self.sidecars if s.published_id == service_id), None)

    # -- ACL tokens --------------------------------------------------------------------------

    def _token_file(self, name: str) -> Path:
        return self.workdir / f"token-{name}"

    def _new_token(self) -> str:
        secret = str(uuid.uuid4())
        self.consul.add_acl_token(secret, SIDECAR_RULES)
        return secret

    def _write_token(self, name: str, secret: str) -> None:
        path = self._token_file(name)
        staged = path.with_suffix(".new")
        staged.write_text(secret + "\n")
        staged.replace(path)  # atomic: the sidecar never reads half a token
        self._tokens[name] = secret

    def revoke_token(self, sidecar: Sidecar) -> None:
        self.consul.revoke_acl_token(self._tokens[sidecar.name])

    def issue_new_token(self, sidecar: Sidecar) -> None:
        self._write_token(sidecar.name, self._new_token())

    # -- looking at Consul and the sidecars --------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request to Consul through the observer's agent, with the management token."""
        headers = {"X-Consul-Token": self.management_token} if self.management_token else {}
        return requests.request(method, f"{self.consul.node_addr(OBSERVER_NODE)}{path}",
                                headers=headers, timeout=5, **kwargs)

    @property
    def kv_path(self) -> str:
        return f"consul-leader/{self.settings.service}/lock"

    def kv_entry(self) -> dict[str, Any] | None:
        reply = self.api("GET", f"/v1/kv/{self.kv_path}")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        entry: dict[str, Any] = reply.json()[0]
        return entry

    def passing_primaries(self) -> list[str]:
        reply = self.api("GET", f"/v1/health/service/{self.settings.service}",
                         params={"tag": self.settings.primary_label, "passing": ""})
        reply.raise_for_status()
        return sorted(entry["Service"]["ID"] for entry in reply.json())

    def live_primary(self) -> Sidecar | None:
        """The one passing primary in Consul, if its sidecar claims leadership."""
        primaries = self.passing_primaries()
        sidecar = self.sidecar_of_service(primaries[0]) if len(primaries) == 1 else None
        if sidecar is None or not sidecar.running():
            return None
        return sidecar if _claims(sidecar.status(timeout=0.5)) else None

    def term(self, sidecar: Sidecar) -> tuple[str, float]:
        """Who leads and since when (by its own clock): a new term has another value."""
        return sidecar.name, float(sidecar.status()["since"])

    def settled_leader(self, not_term: tuple[str, float] | None = None) -> Sidecar | None:
        """The leader, when the cluster is at rest: every running sidecar answers, exactly one
        claims leadership, the others follow, and Consul lists exactly the leader; with
        `not_term`, in another term than that one."""
        running = [s for s in self.sidecars if s.running()]
        states = {s.name: s.status(timeout=0.5) for s in running}
        leaders = [s for s in running if _claims(states[s.name])]
        others_follow = all(states[s.name]["state"] == "Follower"
                            for s in running if s not in leaders)
        if len(leaders) != 1 or not others_follow:
            return None
        leader = leaders[0]
        if not_term is not None and (leader.name, states[leader.name]["since"]) == not_term:
            return None
        return leader if self.passing_primaries() == [leader.published_id] else None

    def wait_settled(self, timeout: float,
                     not_term: tuple[str, float] | None = None) -> Sidecar:
        """Wait until settled, then until the observer has recorded it too."""
        leader = wait_for(lambda: self.settled_leader(not_term), timeout,
                          "one leader, the others following, and Consul listing exactly the "
                          "leader" + (" (in a new term)" if not_term else ""))
        assert leader is not None  # wait_for returns only something truthy
        settled_at = time.monotonic()
        wait_for(lambda: analysis.recovered_at(self.timeline, settled_at) is not None, 2.0,
                 "the observer to record the settled cluster (one live primary)")
        return leader


def _claims(status: dict[str, Any]) -> bool:
    """What /primary answers 200 for: Leader, lease unexpired, primary label published."""
    return (status["state"] == LEADER and (status.get("lease_remaining") or 0) > 0
            and status.get("published", True) is not False)
