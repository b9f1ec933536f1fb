"""One allocation on one Nomad client: its hooks, its tasks, their order.

nomad: client/allocrunner/alloc_runner.go (Run, killTasks: leader first, then the other
main tasks, then sidecars; handleTaskStateUpdates: a failed task or a dead leader kills
the rest, sidecars are killed once only they remain; Shutdown leaves tasks running),
alloc_runner_hooks.go (hook order: consul before group_services; postrun),
tasklifecycle/coordinator.go (prestart sidecars must be running before main tasks
start), consul_hook.go (workload identity tokens: made in Prerun, revoked in Postrun),
group_service_hook.go (group services: registered in Prerun, deregistered in PreKill
then shutdown_delay), client/allochealth/tracker.go (evaluateConsulChecks).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.ports import free_port

from .consul_api import ConsulError
from .env import AllocInfo
from .jobspec import APP_HEALTH_STATES, Job, Service, TaskGroup
from .registrations import Workload
from .service_client import RegisteredCheck
from .task_runner import DEAD, RUNNING, TaskRunner

if TYPE_CHECKING:
    from .client import NomadClient

# nomad: allochealth/tracker.go (evaluateConsulChecks): which statuses on_update forgives.
_FORGIVEN = {"require_healthy": (), "ignore_warnings": ("warning",),
             "ignore": ("warning", "critical")}


@dataclass(frozen=True)
class AllocEvent:
    at: float
    type: str
    detail: str = ""


class Allocation:
    """nomad: alloc_runner.go (allocRunner). Made by NomadClient.place; `stop()` is the
    server's stop (desired status stop), `shutdown()`/`restore()` the client's restart."""

    def __init__(self, client: NomadClient, job: Job, group: TaskGroup, index: int,
                 alloc_id: str | None = None, canary: bool = False,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.job = job
        self.group = group
        self.index = index
        self.id = alloc_id or str(uuid.uuid4())
        self.canary = canary
        self.info = AllocInfo(self.id, job.id, group.name, index, job.namespace,
                              job.datacenter, job.region)
        self.root = client.data_dir / "alloc" / self.id
        self.ports = {label: free_port() for label in group.ports}
        self.desired_status = "run"
        self.events: list[AllocEvent] = []
        self.revoked_tokens: list[str] = []
        self._rng = rng or random.Random()
        self.tasks = {task.name: TaskRunner(self, task, self._rng) for task in group.tasks}
        self._lock = threading.RLock()
        self._service_tokens: dict[str, str] = {}  # service name -> token
        self._task_tokens: dict[str, str] = {}  # task name -> token
        self._group_registered: Workload | None = None
        self._main_allowed = False
        self._kill_lock = threading.Lock()
        self._kill_started = False
        self._postrun_started = False
        self._finished = threading.Event()

    @property
    def node(self) -> str:
        return self.client.name

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"Allocation({self.name} {self.id[:8]} on {self.node})"

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """nomad: alloc_runner.go (Run): prerun hooks in order, then the task runners."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._event("Received")
        self._create_tokens()  # consul_hook.go (Prerun)
        self._register_group_services()  # group_service_hook.go (Prerun)
        for runner in self.tasks.values():
            runner.run()
        self._coordinate()

    def stop(self, timeout: float | None = None) -> None:
        """The allocation is stopped (job stop, drain, reschedule): kill the tasks in
        Nomad's order, then postrun (tokens revoked). Returns when all of it is done."""
        if not self.client.up:
            raise RuntimeError(f"{self!r}: its Nomad client is down; it applies the stop "
                               "when it is back")
        self.desired_status = "stop"
        self._kill_tasks()
        bound = timeout if timeout is not None else self._stop_bound()
        for runner in self.tasks.values():
            runner.join(bound)
        self._postrun()
        self._finished.wait(bound)

    def shutdown(self) -> None:
        """nomad: alloc_runner.go (Shutdown): the client goes away; tasks keep running."""
        for runner in self.tasks.values():
            runner.shutdown()

    def restore(self, timeout: float = 10.0) -> None:
        """The client is back: prerun hooks again (tokens are the stored ones, group
        services registered again), task runners reattach (task services registered in
        their Poststart again). Returns once the running tasks' hooks have run. A
        finished allocation stays finished."""
        if self._finished.is_set():
            return
        self._event("Restored")
        self._register_group_services()
        restored = [runner for runner in self.tasks.values() if runner.state != DEAD]
        for runner in restored:
            runner.run(restoring=True)
        for runner in restored:
            if runner.process is not None:
                runner.wait_poststarted(timeout)

    def update(self, canary: bool | None = None) -> None:
        """An allocation update from the servers (e.g. a deployment promoting a canary):
        update hooks re-render the services (group_service_hook.go / service_hook.go
        Update, i.e. ServiceClient.UpdateWorkload), which starts an operations sync."""
        if canary is not None:
            self.canary = canary
        with self._lock:
            old = self._group_registered
        if old is not None:
            new = self.workload(None, self.group.services)
            self.client.service_client.update_workload(old, new)
            with self._lock:
                self._group_registered = new
        for runner in self.tasks.values():
            runner.update()

    # -- what tests look at and set -----------------------------------------------------

    def task(self, name: str) -> TaskRunner:
        return self.tasks[name]

    def set_health(self, health: str, task: str | None = None) -> None:
        """What the application's script checks report from now on (healthy, warning,
        unhealthy, flapping), for one task or all of them."""
        if health not in APP_HEALTH_STATES:
            raise ValueError(f"health must be one of {APP_HEALTH_STATES}")
        for runner in self.tasks.values():
            if task in (None, runner.name):
                runner.health = health

    def service_ids(self) -> list[str]:
        """The IDs of every Consul service of this allocation (group and task services)."""
        found = [self.workload(None, self.group.services).service_id(s)
                 for s in self.group.services]
        for task in self.group.tasks:
            workload = self.workload(task.name, task.services)
            found.extend(workload.service_id(s) for s in task.services)
        return found

    def running(self) -> bool:
        return all(runner.state == RUNNING for runner in self.tasks.values())

    def wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() >= deadline:
                states = {name: runner.state for name, runner in self.tasks.items()}
                raise TimeoutError(f"{self!r} not running after {timeout:.1f}s: {states}")
            time.sleep(0.02)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def checks(self) -> list[RegisteredCheck]:
        return self.client.service_client.alloc_checks(self.id) or []

    def checks_healthy(self) -> bool:
        """nomad: allochealth/tracker.go (evaluateConsulChecks): only the checks Nomad
        registered count; each expected check must be present, and neither warning nor
        critical unless its on_update forgives it."""
        expected = sorted(check.name for service in self._all_services()
                          for check in service.checks)
        checks = [check for check in self.checks() if check.status is not None]
        if sorted(check.name for check in checks) != expected:
            return False
        return all(check.status == "passing" or check.status in _FORGIVEN[check.on_update]
                   for check in checks)

    def deployment_healthy(self) -> bool:
        """Every task running and the checks healthy: one instant of the tracker's test
        (the caller holds it for min_healthy_time)."""
        return self.running() and self.checks_healthy()

    # -- used by the task runners -------------------------------------------------------

    def workload(self, task: str | None, services: Iterable[Service]) -> Workload:
        services = tuple(services)
        return Workload(
            alloc_id=self.id, job_id=self.job.id, group=self.group.name, task=task,
            namespace=self.job.namespace, services=services,
            host_address=self.client.address, ports=self.ports, canary=self.canary,
            tokens={s.name: self._service_tokens[s.name] for s in services
                    if s.name in self._service_tokens},
        )

    def task_token(self, task: str) -> str | None:
        return self._task_tokens.get(task)

    @property
    def tokens(self) -> list[str]:
        """Every workload identity token this allocation holds (service and task)."""
        return [*self._service_tokens.values(), *self._task_tokens.values()]

    def task_state_changed(self, changed: TaskRunner) -> None:
        """nomad: alloc_runner.go (handleTaskStateUpdates) + the lifecycle coordinator."""
        self._coordinate()
        with self._lock:
            runners = list(self.tasks.values())
            live = [r for r in runners if r.state != DEAD]
            failed = any(r.state == DEAD and r.failed for r in runners)
            leader_dead = any(r.state == DEAD and r.task.leader for r in runners)
            only_sidecars = bool(live) and any(r.task.is_sidecar for r in runners) and all(
                r.task.is_sidecar for r in live)
        if live and (failed or leader_dead or only_sidecars) and not self._kill_started:
            reason = "sibling failed" if failed else (
                "leader dead" if leader_dead else "main tasks dead")
            self._event("Killing tasks", reason)
            threading.Thread(target=self._kill_tasks, daemon=True,
                             name=f"kill-{self.id[:8]}").start()
        if not live:
            self._postrun()

    # -- internals --------------------------------------------------------------------------

    def _coordinate(self) -> None:
        """nomad: tasklifecycle/coordinator.go: prestart sidecars first; main tasks once
        every prestart sidecar is running. Nothing goes back after that."""
        with self._lock:
            sidecars = [r for r in self.tasks.values() if r.task.is_sidecar]
            mains = [r for r in self.tasks.values() if not r.task.is_sidecar]
            for runner in sidecars:
                runner.allow_start()
            if self._main_allowed or not all(r.state == RUNNING for r in sidecars):
                return
            self._main_allowed = True
        for runner in mains:
            runner.allow_start()

    def _kill_tasks(self) -> None:
        """nomad: alloc_runner.go (killTasks): prekill hooks, the leader alone, the other
        main tasks together, then the sidecars together; each task's own kill
        deregisters its services, then kill_signal, then SIGKILL after kill_timeout."""
        with self._kill_lock:
            if self._kill_started:
                return
            self._kill_started = True
        self._event("killTasks")
        self._pre_kill()
        runners = list(self.tasks.values())
        for runner in runners:
            if runner.task.leader:
                runner.kill()
        self._kill_together([r for r in runners if not r.task.leader and not r.task.is_sidecar])
        self._kill_together([r for r in runners if not r.task.leader and r.task.is_sidecar])

    @staticmethod
    def _kill_together(runners: list[TaskRunner]) -> None:
        threads = [threading.Thread(target=runner.kill, daemon=True) for runner in runners]
        for thread in threads:
            thread.start()
        for thread, runner in zip(threads, runners, strict=True):
            thread.join(runner.kill_bound())

    def _pre_kill(self) -> None:
        # nomad: group_service_hook.go (PreKill): deregister, then the group's shutdown_delay
        registered = self._deregister_group_services()
        if registered and self.group.shutdown_delay:
            time.sleep(self.group.shutdown_delay)  # the delay itself is the behaviour

    def _postrun(self) -> None:
        # nomad: alloc_runner_hooks.go (postrun): consul_hook (revoke every token of the
        # allocation) runs before group_service_hook (deregister, if not done yet).
        with self._lock:
            if self._postrun_started:
                return
            self._postrun_started = True
        self._revoke_tokens()
        self._deregister_group_services()
        self._event("Postrun done")
        self._finished.set()

    def _create_tokens(self) -> None:
        acl = self.client.acl
        if acl is None:
            return
        for service in self._all_services():
            if service.identity and service.name not in self._service_tokens:
                self._service_tokens[service.name] = acl.new_token(
                    acl.service_rules_for(service.name))
        for task in self.group.tasks:
            if task.consul_identity:
                self._task_tokens[task.name] = acl.new_token(acl.task_rules)

    def _revoke_tokens(self) -> None:
        acl = self.client.acl
        if acl is None:
            return
        for token in self.tokens:
            try:
                acl.revoke(token)
            except ConsulError as error:  # recorded, as Nomad logs it
                self._event("Token revocation failed", repr(error))
            else:
                self.revoked_tokens.append(token)
        self._event("Tokens revoked", str(len(self.revoked_tokens)))

    def _register_group_services(self) -> None:
        if not self.group.services:
            return
        workload = self.workload(None, self.group.services)
        self.client.service_client.register_workload(workload)
        self._event("Group services committed")
        with self._lock:
            self._group_registered = workload

    def _deregister_group_services(self) -> bool:
        with self._lock:
            registered, self._group_registered = self._group_registered, None
        if registered is None:
            return False
        self.client.service_client.remove_workload(registered)
        return True

    def _all_services(self) -> list[Service]:
        return [*self.group.services, *(s for t in self.group.tasks for s in t.services)]

    def _stop_bound(self) -> float:
        return self.group.shutdown_delay + sum(r.kill_bound() for r in self.tasks.values())

    def _event(self, kind: str, detail: str = "") -> None:
        self.events.append(AllocEvent(time.monotonic(), kind, detail))

