"""Real sidecar processes against the Consul stand-in, and an observer of what Consul shows.

Shared by the end-to-end tests, the chaos suite, the benchmarks and the demo. Nothing here
mocks anything: sidecars are `python -m consul_leader` processes talking HTTP to the stand-in's
agents, and they get real signals.

Two ways to run a group of sidecars, with the same questions asked of both:

* `NomadGroup` (the default of `running_group`): each sidecar is the prestart sidecar task of
  an allocation of `leader_job` on the Nomad model's clients (tests/nomad_double), beside the
  main task whose service Nomad registers and keeps syncing (periodic sync every 2 x SLEEP by
  default, Nomad's 30 s scaled as the test's TTL is). Restarting a sidecar is Nomad restarting
  its task after the restart delay; stopping is Nomad's order (main task, then the sidecar
  with kill_timeout), and the workload-identity token is revoked when ACLs are on.
* `Group` (`running_group(..., nomad=False)`): Consul alone. The service is registered once the
  way Nomad registers it (`register_like_nomad`) and nothing syncs it again; the sidecar is a
  plain child process. For tests about Consul alone.

A sidecar's instances in Consul are found by its allocation ID (any service of the group's
name whose ID or Meta names the allocation), never by one exact service ID, so the harness
keeps working whichever registration carries the role.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.nomad_double import (
    AclSettings,
    Allocation,
    Job,
    NomadDouble,
    RestartPolicy,
    SyncRecord,
    SyncSettings,
    leader_job,
)
from tests.nomad_double.jobs import SIDECAR_TASK
from tests.nomad_double.process import TaskProcess
from tests.ports import free_port as free_port  # re-exported: tests import it from here

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            last = condition()
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def nomad_service_id(alloc_id: str, task: str, service: str, port_label: str = "db") -> str:
    # client/serviceregistration/id.go: _nomad-task-<alloc>-<task>-<service>-<port label>
    return f"_nomad-task-{alloc_id}-{task}-{service}-{port_label}"


def register_like_nomad(
    agent: str,
    service_id: str,
    name: str,
    port: int,
    tags: list[str] | None = None,
    token: str | None = None,
) -> None:
    body = {
        "ID": service_id,
        "Name": name,
        "Tags": tags or ["v1"],
        "Port": port,
        "Address": "127.0.0.1",
        "Meta": {"external-source": "nomad"},
        "EnableTagOverride": True,
    }
    headers = {"X-Consul-Token": token} if token else {}
    reply = requests.put(
        f"{agent}/v1/agent/service/register",
        params={"replace-existing-checks": "true"},
        json=body,
        headers=headers,
        timeout=5,
    )
    reply.raise_for_status()


@dataclass
class Sidecar:
    """One sidecar process beside one Nomad-like task on one node."""

    name: str
    node: str
    agent: str
    alloc_id: str
    service_id: str
    status_port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stopped_by: str | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consul_leader"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.stopped_by = sig.name
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        reply = requests.get(f"http://127.0.0.1:{self.status_port}/status", timeout=timeout)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def endpoint(self, path: str, timeout: float = 1.0) -> int:
        return requests.get(
            f"http://127.0.0.1:{self.status_port}{path}", timeout=timeout
        ).status_code

    def role_endpoints_agree(self) -> bool | None:
        """/primary answers 200 only as Leader, /replica only as Follower.

        None when the state changed while we asked (try again)."""
        before = self.status()
        primary, replica = self.endpoint("/primary"), self.endpoint("/replica")
        after = self.status()
        if (before["state"], before["published"]) != (after["state"], after["published"]):
            return None
        leading = before["state"] == "Leader" and before["published"]
        return (primary == 200) == leading and (replica == 200) == (before["state"] == "Follower")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exit_codes(self) -> list[int]:
        """The exit status of each of its runs that has ended."""
        code = self.process.poll() if self.process is not None else None
        return [] if code is None else [code]

    def ended_on_its_own(self) -> list[int]:
        """Exit statuses of runs that ended though nothing stopped them (no signal from us,
        and exits not declared expected)."""
        return [] if self.stopped_by is not None else self.exit_codes()

    def resume(self) -> None:
        """SIGCONT, in case a test paused it (a stop must not wait on a paused process)."""
        with contextlib.suppress(ProcessLookupError, AssertionError):
            if self.running():
                os.kill(self.pid, signal.SIGCONT)

    @property
    def service_name(self) -> str:
        return self.env.get("CONSUL_LEADER_SERVICE_NAME", "db")

    def agent_service(self) -> dict[str, Any]:
        """The task's service as Nomad registered it (`service_id`), on the sidecar's agent."""
        reply = requests.get(f"{self.agent}/v1/agent/service/{self.service_id}", timeout=2)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    @property
    def published_id(self) -> str:
        """The instance that carries this sidecar's role: its own registration for the task's
        service (the default), or the task's service itself in the seed-compatible mode."""
        if self.env.get("CONSUL_LEADER_PUBLISH") == "labels" or not self.alloc_id:
            return self.service_id
        return f"consul-leader-{self.alloc_id}-{self.service_id}"

    def published_service(self) -> dict[str, Any]:
        reply = requests.get(f"{self.agent}/v1/agent/service/{self.published_id}", timeout=2)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def owns(self, service: Mapping[str, Any]) -> bool:
        """Whether `service` (a service definition, as the agent or a health entry shows it)
        is one of this sidecar's instances: its ID or its Meta names the allocation. Without
        an allocation, only the one service ID the sidecar was given."""
        if not self.alloc_id:
            return bool(self.service_id) and service.get("ID") == self.service_id
        meta = service.get("Meta") or {}
        return self.alloc_id in str(service.get("ID", "")) or self.alloc_id in meta.values()

    def instances(self) -> list[dict[str, Any]]:
        """Every instance of the group's service that this sidecar's allocation has on its
        agent (Nomad's task service today; the sidecar's own registration, too, once it
        publishes through one)."""
        reply = requests.get(f"{self.agent}/v1/agent/services", timeout=2)
        reply.raise_for_status()
        return [service for service in reply.json().values()
                if service.get("Service") == self.service_name and self.owns(service)]

    def labels(self) -> set[str]:
        """The tags on any of its instances (where the role label is, wherever it is put)."""
        return {tag for service in self.instances() for tag in service.get("Tags") or []}


@dataclass
class Group:
    """Sidecars of one service group (one per node), plus helpers to look at Consul."""

    consul: Any  # tests.consul_double.ConsulDouble
    workdir: Path
    service: str = "db"
    ttl: str = "3s"
    sleep: str = "2"
    lock_delay: str = "0s"
    primary_label: str = "primary"
    replica_label: str | None = "replica"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    sidecars: list[Sidecar] = field(default_factory=list)

    @property
    def kv_path(self) -> str:
        return f"consul-leader/{self.service}/lock"

    def add(
        self, node: str, *, start: bool = True, env: Mapping[str, str] | None = None
    ) -> Sidecar:
        index = len(self.sidecars)
        alloc_id = str(uuid.uuid4())
        agent = self.consul.node_addr(node)
        service_id = nomad_service_id(alloc_id, "db", self.service)
        register_like_nomad(
            agent,
            service_id,
            self.service,
            5432 + index,
            token=self.extra_env.get("CONSUL_HTTP_TOKEN"),
        )
        port = free_port()
        alloc_dir = self.workdir / f"alloc-{index}"
        alloc_dir.mkdir(parents=True, exist_ok=True)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CONSUL_HTTP_ADDR": agent,
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_ALLOC_DIR": str(alloc_dir),
            **self.sidecar_settings(f"127.0.0.1:{port}"),
            **self.extra_env,
            **(env or {}),
        }
        sidecar = Sidecar(
            f"s{index}",
            node,
            agent,
            alloc_id,
            service_id,
            port,
            full_env,
            self.workdir / f"sidecar-{index}.log",
        )
        self.sidecars.append(sidecar)
        if start:
            sidecar.start()
        return sidecar

    def sidecar_settings(self, listen: str) -> dict[str, str]:
        """The group's election settings as the sidecar's variables, listening on `listen`."""
        return {
            "CONSUL_LEADER_SERVICE_NAME": self.service,
            "CONSUL_LEADER_PRIMARY_LABEL": self.primary_label,
            "CONSUL_LEADER_TTL": self.ttl,
            "CONSUL_LEADER_SLEEP": self.sleep,
            "CONSUL_LEADER_LOCKDELAY": self.lock_delay,
            "CONSUL_LEADER_LOG_LEVEL": "debug",
            "CONSUL_LEADER_LISTEN": listen,
            "PYTHONUNBUFFERED": "1",
            **({"CONSUL_LEADER_REPLICA_LABEL": self.replica_label} if self.replica_label else {}),
        }

    def any_agent(self, exclude: Callable[[str], bool] = lambda node: False) -> str:
        for node in self.consul.node_names:
            if not exclude(node) and node not in getattr(self, "_failed", set()):
                return str(self.consul.node_addr(node))
        raise AssertionError("no agent left to ask")

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def passing_primaries(self, timeout: float = 2.0) -> list[str]:
        """Service IDs Consul lists as passing primaries (what a client of the service sees)."""
        return sorted(service["ID"] for service in self.passing_primary_services(timeout))

    def passing_primary_services(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        """The Service of every entry `health/service/<name>?tag=<primary>&passing` lists."""
        errors: list[Exception] = []
        for node in self.consul.node_names:
            try:
                reply = requests.get(
                    f"{self.consul.node_addr(node)}/v1/health/service/{self.service}",
                    params={"tag": self.primary_label, "passing": "1"},
                    timeout=timeout,
                )
            except requests.RequestException as exc:
                errors.append(exc)
                continue
            if reply.status_code == 200:
                return [entry["Service"] for entry in reply.json()]
            errors.append(RuntimeError(f"{reply.status_code} {reply.text[:80]}"))
        raise requests.RequestException(f"no agent answered: {errors}")

    def owner(self, service: Mapping[str, Any]) -> Sidecar | None:
        """The sidecar whose allocation `service` belongs to."""
        return next((s for s in self.sidecars if s.owns(service)), None)

    def the_primary(self) -> Sidecar | None:
        """The sidecar of the one passing primary Consul lists; None unless exactly one."""
        primaries = self.passing_primary_services()
        if len(primaries) != 1:
            return None
        return self.owner(primaries[0])

    def wait_single_primary(self, timeout: float, exclude: Sidecar | None = None) -> Sidecar:
        def found() -> Sidecar | None:
            primary = self.the_primary()
            return primary if primary is not None and primary is not exclude else None

        try:
            return wait_for(found, timeout, "exactly one passing primary")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; Consul shows: {self.describe()}") from None

    def describe(self) -> str:
        """What Consul holds for each sidecar's instances: tags, Meta.session, check statuses
        (read in-process, so ACLs and faults never hide it), and the lock's holder."""
        view = ConsulView.of(self.consul)
        parts = [f"holder={view.holder(self.kv_path)}"]
        for sidecar in self.sidecars:
            for service_id, service in view.owned(self.service, sidecar.owns).items():
                checks = ",".join(f"{name}:{status}" for name, status in view.checks_of(service_id))
                parts.append(f"{sidecar.name}@{sidecar.node} {service_id[:24]}... "
                             f"tags={service['Tags']} session={service['Meta'].get('session')} "
                             f"checks=[{checks}] running={sidecar.running()}")
        return "; ".join(parts)

    def leaders_by_status(self) -> list[Sidecar]:
        leaders = []
        for sidecar in self.sidecars:
            if not sidecar.running():
                continue
            with contextlib.suppress(requests.RequestException):
                if sidecar.status(timeout=0.5)["state"] == "Leader":
                    leaders.append(sidecar)
        return leaders

    def assert_role_endpoints(self, timeout: float = 3.0) -> None:
        """Every running sidecar's /primary and /replica agree with its state."""
        for sidecar in self.sidecars:
            if sidecar.running():
                wait_for(sidecar.role_endpoints_agree, timeout, f"{sidecar.name}'s role endpoints")

    def kv(self) -> dict[str, Any] | None:
        reply = requests.get(f"{self.any_agent()}/v1/kv/{self.kv_path}", timeout=2)
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        entry: dict[str, Any] = reply.json()[0]
        return entry

    def stop_all(self, timeout: float = 8.0) -> None:
        for sidecar in self.sidecars:
            if sidecar.running():
                with contextlib.suppress(ProcessLookupError):
                    sidecar.resume()
                    sidecar.send(signal.SIGTERM)
        for sidecar in self.sidecars:
            if sidecar.process is not None:
                try:
                    sidecar.wait(timeout)
                except subprocess.TimeoutExpired:
                    sidecar.process.kill()
                    sidecar.process.wait()


SIDECAR_PORT = "leader"  # the group port label of the sidecar's status listener
NOMAD_SHUTDOWN_WAIT = 5.0  # bounds the Nomad clients' last sync when a group is closed
NOMAD_STOP_BOUND = 60.0  # bounds one allocation's stop (kill_timeouts and reaping)


def seconds(duration: str) -> float:
    """"3s", "500ms" or a bare number of seconds (SLEEP's form) as seconds."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration.removesuffix("s"))


def nomad_clients(consul: Any, workdir: Path, *, period: float,
                  nodes: tuple[str, ...] | None = None, acl: AclSettings | None = None
                  ) -> NomadDouble:
    """Nomad clients on the stand-in's nodes (default: all), started: Nomad's settings but
    for the periodic sync (every `period` seconds) and a bounded last sync when closed."""
    sync = SyncSettings(period=period, shutdown_wait=NOMAD_SHUTDOWN_WAIT)
    nomad = NomadDouble.for_consul(consul, workdir, nodes, sync=sync, acl=acl)
    nomad.start()
    return nomad


def nomad_requests(nomad: NomadDouble, node: str | None = None) -> int:
    """Requests Nomad's clients (or one node's) have had answered by their agents (syncs,
    check heartbeats): Nomad's own load on the agents, apart from its tasks'."""
    return sum(client.service_client.agent.answered for client in nomad.clients
               if node in (None, client.name))


@dataclass
class NomadSidecar(Sidecar):
    """The sidecar task of one allocation of the Nomad model. The same handle as `Sidecar`;
    its process is whichever run of the task is current (Nomad restarts it)."""

    allocation: Allocation | None = None
    _signalled: TaskProcess | None = field(default=None, repr=False)

    def start(self) -> None:
        raise RuntimeError("Nomad starts the task when the allocation is placed")

    @property
    def task_runner(self) -> Any:
        assert self.allocation is not None
        return self.allocation.task(SIDECAR_TASK)

    def current(self) -> TaskProcess | None:
        """The run of the task that is up now (None between a run and its restart)."""
        process: TaskProcess | None = self.task_runner.process
        return process

    def latest(self) -> TaskProcess | None:
        runs: list[TaskProcess] = self.task_runner.processes
        return runs[-1] if runs else None

    @property
    def pid(self) -> int:
        process = self.current() or self.latest()
        assert process is not None, f"{self.name}: its task never started"
        return process.pid

    @property
    def restarts(self) -> int:
        """How many times Nomad restarted the task."""
        return int(self.task_runner.restarts)

    def send(self, sig: signal.Signals) -> None:
        process = self.current()
        assert process is not None, f"{self.name}: no run of its task is up"
        self.stopped_by = sig.name
        self._signalled = process
        process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit status of the run last signalled (else the latest run), as Popen.wait."""
        process = self._signalled or self.latest()
        assert process is not None, f"{self.name}: its task never started"
        code = process.wait(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"{self.name} (pid {process.pid})", timeout)
        return code

    def running(self) -> bool:
        process = self.current()
        return process is not None and process.running()

    def exit_codes(self) -> list[int]:
        runs: list[TaskProcess] = self.task_runner.processes
        return [run.exit_code for run in runs if run.exit_code is not None]

    def ended_on_its_own(self) -> list[int]:
        """Runs that ended with no signal sent to them, by us or by Nomad (which signals
        every kill), unless exits were declared expected (`stopped_by` set, no signal)."""
        if self.stopped_by is not None and self._signalled is None:
            return []
        runs: list[TaskProcess] = self.task_runner.processes
        return [run.exit_code for run in runs
                if run.exit_code is not None and not run.signals_sent]

    def wait_restarted(self, timeout: float) -> TaskProcess:
        """Wait for Nomad to run the task again after the run that was signalled."""
        gone = self._signalled

        def restarted() -> TaskProcess | None:
            process = self.current()
            fresh = process is not None and process is not gone and process.running()
            return process if fresh else None

        found = wait_for(restarted, timeout, f"Nomad restarting {self.name}")
        assert found is not None
        return found

    def logs(self) -> str:
        """Every run's output: the task's stderr then stdout logs (Nomad appends runs)."""
        runner = self.task_runner
        paths = [runner.dirs.stderr, runner.dirs.stdout]
        return "".join(path.read_text(errors="replace") for path in paths if path.exists())

    def stop(self) -> None:
        """Nomad stops the allocation: main task first, then the sidecar (kill_timeout)."""
        assert self.allocation is not None
        self.resume()
        self.allocation.stop()


@dataclass
class NomadGroup(Group):
    """Sidecars as allocations of `leader_job` on the Nomad model's clients (one per node of
    the stand-in). Each `add` places one allocation on the node given; members whose
    environment differs belong to jobs of their own (a job's env block is per job).

    `sync_period` defaults to 2 x SLEEP, `restart_delay` to the TTL (Nomad's 15 s beside a
    15 s TTL); `acl` turns ACLs on: each task gets a workload-identity token, read from
    `secrets/consul_token` through CONSUL_HTTP_TOKEN_FILE as the shipped job does. Nomad
    clients run on `nodes` (default: every node of the stand-in); several groups share one
    node's client, as on a real node, when given the same `shared_nomad` (which they then
    neither start nor close). `main_command` is the main task's (default: the model's stub)."""

    sync_period: float | None = None
    restart_delay: float | None = None
    acl: AclSettings | None = None
    count: int | None = None  # the job's count (drain arithmetic); default: the nodes
    nodes: tuple[str, ...] | None = None
    shared_nomad: NomadDouble | None = None
    main_command: tuple[str, ...] | None = None
    nomad: NomadDouble = field(init=False)
    _jobs: dict[tuple[Any, ...], Job] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.shared_nomad is not None:
            self.nomad = self.shared_nomad
            return
        self.nomad = nomad_clients(self.consul, self.workdir / "nomad", period=self.period,
                                   nodes=self.nodes, acl=self.acl)

    @property
    def period(self) -> float:
        return self.sync_period if self.sync_period is not None else 2 * seconds(self.sleep)

    def add(self, node: str, *, start: bool = True, env: Mapping[str, str] | None = None,
            command: list[str] | None = None) -> NomadSidecar:
        """Place one allocation on `node` (Nomad starts it at once). `env` joins the sidecar
        task's env block; `command` replaces SIDECAR_COMMAND (the baseline, say)."""
        if not start:
            raise ValueError("a Nomad allocation starts when it is placed")
        index = len(self.sidecars)
        task_env = self.sidecar_env(env)
        job = self._job(task_env, command)
        allocation = self.nomad.client(node).place(job, job.groups[0].name, index)
        (service_id,) = allocation.service_ids()
        runner = allocation.task(SIDECAR_TASK)
        sidecar = NomadSidecar(f"s{index}", node, self.consul.node_addr(node), allocation.id,
                               service_id, allocation.ports[SIDECAR_PORT], task_env,
                               runner.dirs.stderr, allocation=allocation)
        self.sidecars.append(sidecar)
        return sidecar

    def sidecar_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The sidecar task's env block (Nomad adds NOMAD_*, the token, the agent)."""
        return {
            **self.sidecar_settings(f"127.0.0.1:${{NOMAD_PORT_{SIDECAR_PORT}}}"),
            "PYTHONPATH": str(REPO),  # modules of this tree (bench.baseline) from any cwd
            **self.extra_env,
            **(env or {}),
        }

    def stop(self, sidecar: Sidecar) -> None:
        """Nomad stops that sidecar's allocation, in its order."""
        assert isinstance(sidecar, NomadSidecar)
        sidecar.stop()

    def stop_all(self, timeout: float = 8.0) -> None:
        """Every allocation stopped in Nomad's order (concurrently), then the clients unless
        they are shared."""
        for sidecar in self.sidecars:
            sidecar.resume()
        if self.shared_nomad is None:
            self.nomad.close()
            return
        stoppers = [threading.Thread(target=s.stop, daemon=True) for s in self.sidecars
                    if isinstance(s, NomadSidecar) and s.allocation is not None
                    and not s.allocation.finished]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(NOMAD_STOP_BOUND)

    def sync_now(self, reason: str, nodes: list[str] | None = None) -> list[SyncRecord]:
        """A sync of that reason ("periodic" or "operations") by the Nomad client of each of
        `nodes` (default: the members' nodes), one after the other; what each sync did."""
        chosen = nodes or list(dict.fromkeys(s.node for s in self.sidecars))
        return [self.nomad.client(node).service_client.sync_now(reason) for node in chosen]

    def _job(self, env: Mapping[str, str], command: list[str] | None) -> Job:
        key = (tuple(sorted(env.items())), tuple(command or ()))
        if key not in self._jobs:
            job_id = self.service if not self._jobs else f"{self.service}-{len(self._jobs)}"
            sleep = seconds(self.sleep)
            self._jobs[key] = leader_job(
                job_id=job_id, service=self.service,
                count=self.count or len(self.nomad.clients), sidecar_env=env,
                sidecar_command=command, main_command=self.main_command,
                extra_ports=(SIDECAR_PORT,), check_interval=sleep,
                restart=RestartPolicy(delay=self.restart_delay
                                      if self.restart_delay is not None else seconds(self.ttl)),
                token_file=self.acl is not None,
            )
        return self._jobs[key]


@dataclass
class Sample:
    at: float
    primaries: list[str]


class HealthObserver:
    """Samples Consul's health view every `period` seconds and records every answer.

    The safety invariant is checked on every sample: never two passing primaries.
    """

    def __init__(self, group: Group, period: float = 0.05) -> None:
        self._group = group
        self._period = period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def __enter__(self) -> HealthObserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(requests.RequestException, ValueError):
                self.samples.append(Sample(started, self._group.passing_primaries(timeout=1.0)))
            self._stop.wait(max(0.0, self._period - (time.monotonic() - started)))

    def overlaps(self) -> list[Sample]:
        return [s for s in self.samples if len(s.primaries) > 1]

    def assert_safe(self) -> None:
        overlaps = self.overlaps()
        assert not overlaps, f"two passing primaries seen: {overlaps[:3]}"
        assert self.samples, "the observer got no answer at all"


@contextlib.contextmanager
def running_group(
    consul: Any, workdir: Path, nodes: list[str] | None = None, *, nomad: bool = True,
    **settings: Any
) -> Iterator[Group]:
    """One sidecar per node (default: every node of the stand-in), as allocations of the
    Nomad model (`NomadGroup`), or with `nomad=False` on Consul alone (`Group`). Every
    sidecar is stopped when the block ends, however it ends."""
    group = NomadGroup(consul, workdir, **settings) if nomad else Group(consul, workdir,
                                                                          **settings)
    with group:
        for node in nodes or list(consul.node_names):
            group.add(node)
        yield group


def dump_logs(group: Group) -> str:
    return "\n".join(f"===== {s.name} ({s.node})\n{s.logs()[-6000:]}" for s in group.sidecars)


def request_count(consul: Any) -> int:
    """Requests the stand-in has answered since its last stats reset."""
    return int(consul.stats()["total"])


@dataclass(frozen=True)
class ConsulView:
    """One in-process snapshot of the stand-in's state (no request is sent or counted), with
    the questions tests and benchmarks ask of it."""

    state: dict[str, Any]

    @classmethod
    def of(cls, consul: Any) -> ConsulView:
        return cls(consul.snapshot())

    def holder(self, kv_path: str) -> str | None:
        """The session holding `kv_path`, or None when it is free or missing."""
        for entry in self.state["kv"]:
            if entry["Key"] == kv_path:
                return entry.get("Session") or None
        return None

    def session_ids(self) -> set[str]:
        return {session["ID"] for session in self.state["sessions"]}

    def services(self, name: str) -> dict[str, dict[str, Any]]:
        """Every registered instance of service `name`, by service ID."""
        found: dict[str, dict[str, Any]] = {}
        for node in self.state["nodes"].values():
            for service_id, service in node["services"].items():
                if service["Service"] == name:
                    found[service_id] = service
        return found

    def owned(self, name: str, owns: Callable[[Mapping[str, Any]], bool]
              ) -> dict[str, dict[str, Any]]:
        """The instances of `name` for which `owns` holds (e.g. `Sidecar.owns`), by ID."""
        return {sid: service for sid, service in self.services(name).items()
                if owns(service)}

    def tagged(self, name: str, label: str) -> list[str]:
        """Service IDs of `name` carrying `label` (Consul's tag filter ignores case)."""
        return sorted(
            service_id
            for service_id, service in self.services(name).items()
            if _has_tag(service, label)
        )

    def passing_primaries(self, name: str, label: str = "primary") -> list[str]:
        """What `health/service/<name>?tag=<label>&passing` would list."""
        return [sid for sid in self.tagged(name, label) if self.passing(sid)]

    def passing_with(self, service_ids: list[str], label: str) -> list[str]:
        """Those of `service_ids` Consul would list as passing and tagged `label`."""
        return [
            sid for sid in service_ids
            if self.passing(sid) and any(_has_tag(s, label) for s in self._instances(sid))
        ]

    def passing(self, service_id: str) -> bool:
        """As `health/service?passing` decides: serfHealth and every service check passing."""
        for node in self.state["nodes"].values():
            if service_id not in node["services"]:
                continue
            checks = [c for c in node["checks"].values() if c["ServiceID"] == service_id]
            return node["serfHealth"] == "passing" and all(
                check["Status"] == "passing" for check in checks
            )
        return False

    def checks_of(self, service_id: str) -> list[tuple[str, str]]:
        """(check ID, status) of every check on `service_id`, on whichever node holds it."""
        return sorted((check["CheckID"], check["Status"])
                      for node in self.state["nodes"].values()
                      for check in node["checks"].values() if check["ServiceID"] == service_id)

    def _instances(self, service_id: str) -> list[dict[str, Any]]:
        return [node["services"][service_id] for node in self.state["nodes"].values()
                if service_id in node["services"]]


def _has_tag(service: Mapping[str, Any], label: str) -> bool:
    return label.lower() in (tag.lower() for tag in service["Tags"])

