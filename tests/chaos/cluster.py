"""A chaos cluster: the Consul stand-in, one sidecar per node behind its own fault proxy, and
the observer, started and stopped together.

Layout: node `obs` hosts no sidecar; the observer and the scenarios talk to Consul through it,
so faults injected on the sidecars' nodes never blind the measurement. Nodes `n1..nk` each
host one allocation and its sidecar, whose `CONSUL_HTTP_ADDR` is that node's fault proxy.

Two settings (`ClusterSettings.nomad`):
* **Nomad in the loop** (the default, `NomadSettings`): a Nomad client of the model
  (tests/nomad_double) on each node runs the project's job (`leader_job`: the sidecar as a
  prestart sidecar task beside the main task and its service). Nomad syncs the services
  periodically (every 2 x SLEEP, scaled as the other timings are) and on every operation,
  restarts an exited sidecar task after the restart delay, and stops allocations in its own
  order. Allocations placed later (a drain's replacements) join as new lanes.
* **Consul only** (`nomad=None`): the cluster registers each service as Nomad would, once,
  and runs the sidecar processes itself; for scenarios about Consul alone.
Each allocation's application is a writer (tests/fencing/writer.py: the main task under
Nomad, a process beside the sidecar otherwise) that writes to one fenced store with the token
of its sidecar's leader file; once every writer has stopped, `fencing` holds the run's
figures, judged against Consul's journal of the lock key (tests/fencing/judge.py).
With ACLs on, every sidecar has its own token in its own `CONSUL_HTTP_TOKEN_FILE` (Nomad's
task token in `secrets/consul_token` under Nomad), so one of them can be revoked alone.

Guarantees: leaving the `with` block stops the observer, then every sidecar and writer
(Nomad's stop order, or SIGCONT, SIGTERM, SIGKILL after 8 s), judges the writes, then stops
the store, the proxies and the stand-in, even when the block raised; every process exit is
kept for the crash count (`exits`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.chaos import analysis
from tests.chaos.members import (
    STATUS_PORT_LABEL,
    Member,
    ProcessExit,
    ProcessSidecar,
    TaskSidecar,
)
from tests.chaos.observer import Observer
from tests.chaos.proxy import FaultProxy
from tests.chaos.timeline import LEADER, Timeline, TimelineEvent
from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem
from tests.fencing.judge import FencingFigures
from tests.fencing.store import StoreServer
from tests.fencing.writers import WriterProcess, figures_of, writer_command
from tests.harness import free_port, wait_for
from tests.nomad_double import (
    SIDECAR_COMMAND,
    AclSettings,
    Allocation,
    Job,
    Migrate,
    NodeConfig,
    NomadDouble,
    RestartPolicy,
    ServiceClient,
    SyncRecord,
    SyncSettings,
    leader_job,
)
from tests.nomad_double.jobs import MAIN_TASK

OBSERVER_NODE = "obs"
JOB_ID = "db"
DEAF_WRAPPER = [sys.executable, str(Path(__file__).with_name("deaf.py"))]
# The sufficient policy of the brief: the lock, sessions, services (tags, checks), node reads.
SIDECAR_RULES = """
key_prefix "consul-leader/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
"""


@dataclass(frozen=True)
class NomadSettings:
    """Nomad's timings, scaled to the cluster's (production: sync every 30 s with SLEEP 10 s,
    check every 10 s, restart delay 15 s, min_healthy_time 10 s; here sync 2 x SLEEP)."""

    sync_period: float = 2.0
    check_interval: float = 1.0  # the main task's script check ("alive")
    restart_delay: float = 8.0  # longer than the crash bound: a failover needs no restart
    kill_timeout: float = 5.0  # Nomad's default, for both tasks
    min_healthy_time: float = 2.0  # a drain's migrate block
    deaf_sidecar: bool = False  # the sidecar ignores SIGTERM (an entrypoint that eats it)

    @property
    def restart_bound(self) -> float:
        """Time within which Nomad runs an exited task again: the delay, its 25 % jitter,
        and a start."""
        return self.restart_delay * 1.25 + 5.0


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
    nomad: NomadSettings | None = field(default_factory=NomadSettings)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(f"n{i}" for i in range(1, self.nodes + 1))

    @property
    def mode(self) -> str:
        return "nomad" if self.nomad is not None else "consul-only"


def consul_only(settings: ClusterSettings) -> ClusterSettings:
    return replace(settings, nomad=None)


@dataclass
class ChaosCluster:
    workdir: Path
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    consul: ConsulDouble = field(init=False)
    nomad: NomadDouble | None = field(init=False, default=None)
    proxies: dict[str, FaultProxy] = field(init=False, default_factory=dict)
    timeline: Timeline = field(init=False)
    observer: Observer = field(init=False)
    management_token: str | None = field(init=False, default=None)
    store: StoreServer = field(init=False)  # the fenced store every writer writes to
    fencing: FencingFigures | None = field(init=False, default=None)  # once closed
    writer_problems: list[str] = field(init=False, default_factory=list)  # once closed
    _writers: list[WriterProcess] = field(init=False, default_factory=list)
    _members: list[Member] = field(init=False, default_factory=list)
    _members_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _service_clients: dict[int, ServiceClient] = field(init=False, default_factory=dict)
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
        # Absolute: Nomad's task directories and NOMAD_ALLOC_DIR are absolute paths, read by
        # processes whose working directory is their task's.
        self.workdir = self.workdir.resolve()
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
        self.store = self._stack.enter_context(StoreServer())
        self._stack.callback(self._judge_fencing)  # runs once every writer has stopped
        if self.settings.nomad is not None:
            self._start_nomad(self.settings.nomad)
        else:
            self._start_processes()
        self.timeline = Timeline(lanes=[m.name for m in self._members], owners={},
                                 lane_labels={m.name: m.label for m in self._members})
        self.observer = Observer(
            self.timeline,
            f"{self.consul.node_addr(OBSERVER_NODE)}/v1/health/service/{self.settings.service}",
            self.settings.primary_label, self.members, token=self.management_token,
            discover=self._adopt_new_allocations if self.nomad is not None else None,
        )
        self._stack.callback(self.observer.stop)
        self.observer.__enter__()

    def _close_proxies(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()

    # -- Nomad in the loop ---------------------------------------------------------------------

    def _start_nomad(self, nomad: NomadSettings) -> None:
        s = self.settings
        acl = (AclSettings(self.consul.control_addr, self.management_token, SIDECAR_RULES)
               if s.acl and self.management_token else None)
        nodes = [NodeConfig(node, self.consul.node_addr(node),
                            meta={"consul_http_addr": self.proxies[node].url})
                 for node in s.node_names]
        self.nomad = self._stack.enter_context(NomadDouble(
            nodes, self.workdir / "nomad", sync=SyncSettings(period=nomad.sync_period), acl=acl))
        self._stack.callback(self._record_syncs)
        allocations = self.nomad.run_job(self._job(nomad), nodes=s.node_names)
        for allocation in sorted(allocations, key=lambda a: a.index):
            self._members.append(self._task_member(allocation))
        self._remember_service_clients()

    def _job(self, nomad: NomadSettings) -> Job:
        s = self.settings
        job = leader_job(
            job_id=JOB_ID, service=s.service, count=s.nodes,
            sidecar_env=self._common_env("${NOMAD_PORT_" + STATUS_PORT_LABEL + "}"),
            sidecar_command=[*DEAF_WRAPPER, *SIDECAR_COMMAND] if nomad.deaf_sidecar else None,
            main_command=writer_command(self.store.url),  # the application: fencing/writer.py
            check_interval=nomad.check_interval, kill_timeout=nomad.kill_timeout,
            sidecar_kill_timeout=nomad.kill_timeout, token_file=s.acl,
            # Enough attempts that Nomad never gives up on a task during a run.
            restart=RestartPolicy(attempts=1000, delay=nomad.restart_delay, mode="delay"),
            extra_ports=(STATUS_PORT_LABEL,),
        )
        group = replace(job.groups[0], migrate=Migrate(max_parallel=1,
                                                       min_healthy_time=nomad.min_healthy_time))
        return replace(job, groups=(group,))

    def _task_member(self, allocation: Allocation, replaces: str | None = None) -> TaskSidecar:
        assert self.settings.nomad is not None
        return TaskSidecar(f"s{len(self._members)}", allocation,
                           self.consul.node_addr(allocation.node),
                           deaf=self.settings.nomad.deaf_sidecar, replaces=replaces)

    def _adopt_new_allocations(self) -> list[Member]:
        """Allocations placed since the start (a drain's replacements) become new members;
        also remembers every service client (a client restart makes a new one)."""
        assert self.nomad is not None
        self._remember_service_clients()
        with self._members_lock:
            known = {m.alloc_id for m in self._members}
            fresh = [a for a in self.nomad.allocations(JOB_ID) if a.id not in known]
            adopted: list[Member] = []
            for allocation in fresh:
                replaced = next((m.name for m in self._members if isinstance(m, TaskSidecar)
                                 and m.allocation.index == allocation.index), None)
                member = self._task_member(allocation, replaced)
                self._members.append(member)
                adopted.append(member)
        return adopted

    def _remember_service_clients(self) -> None:
        assert self.nomad is not None
        for client in self.nomad.clients:
            self._service_clients.setdefault(id(client.service_client), client.service_client)

    def _record_syncs(self) -> None:
        """Put Nomad's syncs that wrote a sidecar's service on the timeline (pictures and
        attribution), after the observer stopped."""
        if self.nomad is None:
            return
        self._remember_service_clients()
        members = self.members()
        for service_client in self._service_clients.values():
            for record in service_client.sync_log():
                event = _sync_event(record, members, self.timeline.origin)
                if event is not None:
                    self.timeline.record_event(event)

    # -- Consul only -------------------------------------------------------------------------

    def _start_processes(self) -> None:
        self._stack.callback(self._stop_processes)
        for index, node in enumerate(self.settings.node_names):
            self._members.append(self._process_member(index, node))
        for member in self._members:
            assert isinstance(member, ProcessSidecar)
            member.start()
        self._stack.callback(self._stop_writers)  # before the sidecars stop
        self._writers = [WriterProcess(self.store.url, m.env, self.workdir / f"writer-{m.name}.log")
                         for m in self._members if isinstance(m, ProcessSidecar)]

    def _process_member(self, index: int, node: str) -> ProcessSidecar:
        s = self.settings
        alloc_id = str(uuid.uuid4())
        service_id = nomad_service_id(alloc_id, "db", s.service)
        agent = self.consul.node_addr(node)
        register_like_nomad(agent, service_id, s.service, 5432 + index,
                            token=self.management_token)
        name = f"s{index}"
        port = free_port()
        alloc_dir = self.workdir / f"alloc-{index}"
        alloc_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **self._common_env(str(port)),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CONSUL_HTTP_ADDR": self.proxies[node].url,
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_ALLOC_DIR": str(alloc_dir),
        }
        token_path = self.workdir / f"token-{name}"
        if s.acl:
            env["CONSUL_HTTP_TOKEN_FILE"] = str(token_path)
            _write_token(token_path, self._new_token())
        return ProcessSidecar(name, node, agent, alloc_id, service_id, 5432 + index, port,
                              env, self.workdir / f"sidecar-{index}.log", token_path)

    def _stop_processes(self) -> None:
        processes = [m for m in self.members() if isinstance(m, ProcessSidecar)]
        for member in processes:
            member.request_stop()
        for member in processes:
            member.reap()

    def _stop_writers(self) -> None:
        for writer in self._writers:
            writer.stop()

    # -- fencing -------------------------------------------------------------------------------

    def _judge_fencing(self) -> None:
        """The run's writes judged against Consul's journal of the lock key, and writers that
        ended on their own (under Nomad: a main task run that ended with no signal sent)."""
        self.fencing = figures_of(self.store.store, self.consul, self.kv_path)
        if self.nomad is None:
            self.writer_problems = [f"a writer exited with {w.crashed} on its own"
                                    for w in self._writers if w.crashed is not None]
            return
        self.writer_problems = [
            f"{m.name}'s writer (the main task) exited with {run.exit_code} on its own"
            for m in self.members() if isinstance(m, TaskSidecar)
            for run in m.allocation.task(MAIN_TASK).processes
            if run.exit_code is not None and not run.signals_sent]

    def _common_env(self, listen_port: str) -> dict[str, str]:
        s = self.settings
        return {
            "PYTHONUNBUFFERED": "1",
            "CONSUL_LEADER_SERVICE_NAME": s.service,
            "CONSUL_LEADER_PRIMARY_LABEL": s.primary_label,
            "CONSUL_LEADER_REPLICA_LABEL": s.replica_label,
            "CONSUL_LEADER_TTL": f"{s.ttl:g}s",
            "CONSUL_LEADER_SLEEP": f"{s.sleep:g}",
            "CONSUL_LEADER_LOCKDELAY": f"{s.lock_delay:g}s",
            "CONSUL_LEADER_LOG_LEVEL": "debug",
            "CONSUL_LEADER_LISTEN": f"127.0.0.1:{listen_port}",
        }

    # -- the members ---------------------------------------------------------------------------

    def members(self) -> list[Member]:
        with self._members_lock:
            return list(self._members)

    @property
    def sidecars(self) -> list[Member]:
        return self.members()

    @property
    def exits(self) -> list[ProcessExit]:
        return [e for member in self.members() for e in member.exits()]

    def sidecar(self, name: str) -> Member:
        return next(m for m in self.members() if m.name == name)

    def member_of(self, service: dict[str, Any]) -> Member | None:
        """The sidecar whose allocation the service names (by ID or Meta)."""
        return next((m for m in self.members() if m.names_allocation(service)), None)

    def allocation_of(self, member: Member) -> Allocation:
        if not isinstance(member, TaskSidecar):
            raise TypeError(f"{member.name} is not an allocation's sidecar (Consul-only run)")
        return member.allocation

    def signal(self, member: Member, sig: signal.Signals) -> None:
        member.send_signal(sig)

    def restart(self, member: Member) -> None:
        """Have an exited sidecar run again: Nomad restarts the task after its restart delay
        (we wait for it); in the Consul-only setting we start it at once."""
        nomad = self.settings.nomad
        member.await_restart(nomad.restart_bound if nomad is not None else 0.0)

    def await_restarts(self) -> None:
        """Nomad in the loop: wait until Nomad has run again every sidecar task that exited
        in a live allocation, so that the run ends at full strength (and no teardown signal
        lands on a process still starting)."""
        nomad = self.settings.nomad
        if nomad is None:
            return
        for member in self.members():
            if isinstance(member, TaskSidecar) and member.allocation_live \
                    and not member.runs_since_last_stop_signal():
                member.await_restart(nomad.restart_bound)

    # -- ACL tokens --------------------------------------------------------------------------

    def _new_token(self) -> str:
        secret = str(uuid.uuid4())
        self.consul.add_acl_token(secret, SIDECAR_RULES)
        return secret

    def revoke_token(self, member: Member) -> None:
        self.consul.revoke_acl_token(member.token_path.read_text().strip())

    def issue_new_token(self, member: Member) -> None:
        """A new token in the sidecar's token file (an operator's, or a renewed identity)."""
        _write_token(member.token_path, self._new_token())

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

    def primary_lanes(self) -> list[str]:
        """Whose instances Consul lists as passing primaries ("?" for a stranger's)."""
        reply = self.api("GET", f"/v1/health/service/{self.settings.service}",
                         params={"tag": self.settings.primary_label, "passing": ""})
        reply.raise_for_status()
        owners = [self.member_of(entry["Service"]) for entry in reply.json()]
        return sorted(owner.name if owner else "?" for owner in owners)

    def live_primary(self) -> Member | None:
        """The one passing primary in Consul, if its sidecar claims leadership."""
        lanes = self.primary_lanes()
        member = self.sidecar(lanes[0]) if len(lanes) == 1 and lanes[0] != "?" else None
        if member is None or not member.running():
            return None
        return member if _claims(member.status(timeout=0.5)) else None

    def term(self, member: Member) -> tuple[str, float]:
        """Who leads and since when (by its own clock): a new term has another value."""
        return member.name, float(member.status()["since"])

    def settled_leader(self, not_term: tuple[str, float] | None = None) -> Member | None:
        """The leader, when the cluster is at rest: every running sidecar answers, exactly one
        claims leadership, the others follow, and Consul lists exactly the leader; with
        `not_term`, in another term than that one."""
        running = [m for m in self.members() if m.running()]
        states = {m.name: m.status(timeout=0.5) for m in running}
        leaders = [m for m in running if _claims(states[m.name])]
        others_follow = all(states[m.name]["state"] == "Follower"
                            for m in running if m not in leaders)
        if len(leaders) != 1 or not others_follow:
            return None
        leader = leaders[0]
        if not_term is not None and (leader.name, states[leader.name]["since"]) == not_term:
            return None
        return leader if self.primary_lanes() == [leader.name] else None

    def wait_settled(self, timeout: float,
                     not_term: tuple[str, float] | None = None) -> Member:
        """Wait until settled, then until the observer has recorded it too."""
        leader = wait_for(lambda: self.settled_leader(not_term), timeout,
                          "one leader, the others following, and Consul listing exactly the "
                          "leader" + (" (in a new term)" if not_term else ""))
        assert leader is not None  # wait_for returns only something truthy
        settled_at = time.monotonic()
        wait_for(lambda: analysis.recovered_at(self.timeline, settled_at) is not None,
                 self._record_timeout,
                 "the observer to record the settled cluster (one live primary)")
        # ... and every sidecar's state since: what a scenario compares with comes from there
        wait_for(lambda: self.observer.caught_up(settled_at), self._record_timeout,
                 "the observer to sample every sidecar after the cluster settled")
        return leader

    @property
    def _record_timeout(self) -> float:
        nomad = self.settings.nomad
        return 2.0 + (nomad.sync_period if nomad is not None else 0.0)


def _claims(status: dict[str, Any]) -> bool:
    """What /primary answers 200 for: Leader, lease unexpired, primary label published."""
    return (status["state"] == LEADER and (status.get("lease_remaining") or 0) > 0
            and status.get("published", True) is not False)


def _write_token(path: Path, secret: str) -> None:
    staged = path.with_suffix(".new")
    staged.write_text(secret + "\n")
    staged.replace(path)  # atomic: the sidecar never reads half a token


def _sync_event(record: SyncRecord, members: list[Member], origin: float
                ) -> TimelineEvent | None:
    """A Nomad sync that (re-)registered or deregistered a sidecar's service, if any."""
    if record.finished < origin:
        return None
    written = {**dict.fromkeys(record.registered, "registered"),
               **dict.fromkeys(record.reregistered, "re-registered"),
               **dict.fromkeys(record.deregistered, "deregistered")}
    lanes = tuple(sorted(m.name for m in members if m.target_service_id in written))
    if not lanes:
        return None
    what = sorted({written[m.target_service_id] for m in members if m.name in lanes})
    rewrote = tuple(sorted(m.name for m in members
                           if m.target_service_id in record.reregistered))
    return TimelineEvent(record.finished, f"Nomad {record.reason} sync", lanes,
                         ", ".join(what), rewrote)


# -- registering a service as Nomad would (the Consul-only setting, and item 9) --------------


def nomad_service_id(alloc_id: str, task: str, service: str, port_label: str = "db") -> str:
    # client/serviceregistration/id.go: _nomad-task-<alloc>-<task>-<service>-<port label>
    return f"_nomad-task-{alloc_id}-{task}-{service}-{port_label}"


def register_like_nomad(agent: str, service_id: str, name: str, port: int,
                        token: str | None = None) -> None:
    """One registration as Nomad's sync makes it: jobspec tags, Nomad's Meta, tag override
    on, replace-existing-checks (which drops every check Nomad did not send)."""
    body: dict[str, Any] = {"ID": service_id, "Name": name, "Tags": ["v1"], "Port": port,
                            "Address": "127.0.0.1", "Meta": {"external-source": "nomad"},
                            "EnableTagOverride": True}
    headers = {"X-Consul-Token": token} if token else {}
    requests.put(f"{agent}/v1/agent/service/register",
                 params={"replace-existing-checks": "true"}, json=body, headers=headers,
                 timeout=5).raise_for_status()
