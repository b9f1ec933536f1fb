"""One task of one allocation: start, watch, restart with the policy's delay, kill.

nomad: client/allocrunner/taskrunner/task_runner.go (TaskRunner.Run, handleKill,
killTask, shouldRestart, Restore, runDriver: a restored task is not started again),
lifecycle.go (Kill), restarts/restarts.go (RestartTracker), service_hook.go (task
services: registered in Poststart, deregistered in PreKilling, Exited and Stop, updated
in Update), consul_hook.go (the Consul token file), script_check_hook.go.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import ids
from .checks import ScriptCheckRunner
from .env import TaskDirs, nomad_variables, task_environment
from .jobspec import FLAPPING, HEALTHY, UNHEALTHY, WARNING, RestartPolicy, Task
from .process import REAP_TIMEOUT, TaskProcess
from .registrations import Workload

if TYPE_CHECKING:
    from .alloc_runner import Allocation

PENDING, RUNNING, DEAD = "pending", "running", "dead"
MAX_KILL_TIMEOUT = 30.0  # nomad: client config max_kill_timeout (default 30s)
JITTER = 0.25  # nomad: restarts.go (jitter)

RESTART, NOT_RESTARTING, TERMINATED = "restart", "not-restarting", "terminated"
_GO, _KILL, _SHUTDOWN, _TIMEOUT = "go", "kill", "shutdown", "timeout"


@dataclass(frozen=True)
class TaskEvent:
    """A task event as Nomad records them (Started, Terminated, Restarting, Killing...)."""

    at: float
    type: str
    detail: str = ""


class RestartTracker:
    """nomad: restarts.go (RestartTracker.GetState, jitter, getDelay): a service job
    restarts after a successful exit too; after `attempts` restarts within `interval`
    mode "fail" gives up and mode "delay" waits for the interval to end."""

    def __init__(self, policy: RestartPolicy, job_type: str, rng: random.Random) -> None:
        self.policy = policy
        self.on_success = job_type not in ("batch", "sysbatch")
        self.rng = rng
        self.count = 0
        self.window_start = time.monotonic()
        self.killed = False

    def decide(self, exit_code: int | None) -> tuple[str, float]:
        if self.killed:
            return TERMINATED, 0.0
        succeeded = exit_code == 0
        if self.policy.attempts == 0:
            return (TERMINATED if succeeded and not self.on_success else NOT_RESTARTING), 0.0
        now = time.monotonic()
        if now > self.window_start + self.policy.interval:
            self.count, self.window_start = 0, now
        self.count += 1
        if succeeded and not self.on_success:
            return TERMINATED, 0.0
        if self.count > self.policy.attempts:
            if self.policy.mode == "fail":
                return NOT_RESTARTING, 0.0
            return RESTART, self.window_start + self.policy.interval - now
        delay = self.policy.delay
        return RESTART, delay + self.rng.random() * delay * JITTER


class TaskRunner:
    """A task's run loop in its own thread. `process` is the current run's process."""

    def __init__(self, alloc: Allocation, task: Task, rng: random.Random) -> None:
        self.alloc = alloc
        self.task = task
        self.name = task.name
        self.dirs = TaskDirs(alloc.root, task.name)
        self.state = PENDING
        self.failed = False
        self.restarts = 0
        self.process: TaskProcess | None = None
        self.processes: list[TaskProcess] = []
        self.env: dict[str, str] = {}
        self.events: list[TaskEvent] = []
        self.health = HEALTHY
        self._tracker = RestartTracker(alloc.group.restart, alloc.job.type, rng)
        self._cond = threading.Condition()
        self._start_allowed = False
        self._killing = False
        self._shutting_down = False
        self._registered: Workload | None = None  # service hook: what is registered now
        self._checks: list[ScriptCheckRunner] = []
        self._thread: threading.Thread | None = None
        self._poststarted = threading.Event()  # this run's Poststart hooks have run

    # -- what the allocation runner calls -----------------------------------------------

    def run(self, restoring: bool = False) -> None:
        with self._cond:
            self._shutting_down = False
        self._poststarted.clear()
        self._thread = threading.Thread(target=self._run, args=(restoring,), daemon=True,
                                        name=f"task-{self.alloc.id[:8]}-{self.name}")
        self._thread.start()

    def allow_start(self) -> None:
        """The lifecycle coordinator lets this task start (tasklifecycle/coordinator.go)."""
        with self._cond:
            self._start_allowed = True
            self._cond.notify_all()

    def kill(self, timeout: float | None = None) -> None:
        """nomad: lifecycle.go (Kill): ask the run loop to kill, wait for it to end."""
        with self._cond:
            self._killing = True
            self._cond.notify_all()
        self.join(self.kill_bound() if timeout is None else timeout)

    def kill_bound(self) -> float:
        return self.task.shutdown_delay + self.kill_timeout + REAP_TIMEOUT + 5.0

    def shutdown(self, timeout: float = 10.0) -> None:
        """The Nomad client goes away: stop watching, leave the process running."""
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()
        self.join(timeout)

    def wait_poststarted(self, timeout: float) -> bool:
        """Wait until this run's Poststart hooks ran (services registered, checks on)."""
        return self._poststarted.wait(timeout)

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Its run loop is running (it may be pending, running or between restarts)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def kill_timeout(self) -> float:
        return min(self.task.kill_timeout, MAX_KILL_TIMEOUT)

    def update(self) -> None:
        """nomad: service_hook.go (Update): re-render the registered services."""
        with self._cond:
            old = self._registered
        if old is not None:
            new = self._workload()
            self.alloc.client.service_client.update_workload(old, new)
            with self._cond:
                self._registered = new

    def emergency_kill(self) -> None:
        """Last resort when leaving with the loop stuck: SIGKILL the group."""
        process = self.process
        if process is not None and process.running():  # never signal a reaped pid
            process.send_signal(signal.SIGCONT)
            process.shutdown(signal.SIGKILL, 0)

    # -- the run loop ---------------------------------------------------------------------

    def _run(self, restoring: bool) -> None:
        try:
            if self.state != DEAD:
                self._run_loop(restoring)
        finally:
            if self._shutting_down:
                self._stop_checks()  # no heartbeats while the client is away
            self.alloc.task_state_changed(self)

    def _run_loop(self, restoring: bool) -> None:
        while True:
            if self.process is None or not restoring:
                outcome = self._await(lambda: self._start_allowed, None)
                if outcome == _SHUTDOWN:
                    return
                if outcome == _KILL:
                    break
                self._prestart()
                self._start_process()
            else:
                self._prestart()  # runDriver: a restored handle is reattached, not started
            restoring = False
            self._set_state(RUNNING)
            self._poststart()
            outcome = self._await(lambda: self._process_exited(), None)
            if outcome == _SHUTDOWN:
                return
            if outcome == _KILL:
                self._handle_kill()
                break
            then = self._after_exit()
            if then == _SHUTDOWN:
                return
            if then != _GO:
                break
        self._become_dead()

    def _after_exit(self) -> str:
        """Exited hooks, then the restart policy: _GO to run again, _SHUTDOWN when the
        client went away during the restart delay, anything else to die."""
        process = self.process
        code = process.exit_code if process else None
        self._event("Terminated", f"exit code {code}")
        self._deregister_services()  # service_hook.go (Exited)
        self.process = None
        decision, delay = self._tracker.decide(code)
        if decision != RESTART:
            self.failed = decision == NOT_RESTARTING
            self._event("Not Restarting" if self.failed else "Terminated", decision)
            return _KILL
        self.restarts += 1
        self._set_state(PENDING, "Restarting", f"delay {delay:.3f}s")
        outcome = self._await(lambda: False, delay)
        return _GO if outcome == _TIMEOUT else outcome

    def _become_dead(self) -> None:
        if self.process is not None and self.process.running():
            self._handle_kill()  # Run: a restored handle of a terminal task is killed
        self._stop_checks()
        self._deregister_services()  # service_hook.go (Stop)
        self._set_state(DEAD)

    def _await(self, ready: Callable[[], bool], timeout: float | None) -> str:
        with self._cond:
            happened = self._cond.wait_for(
                lambda: self._killing or self._shutting_down or ready(), timeout)
            if self._killing:
                return _KILL
            if self._shutting_down:
                return _SHUTDOWN
            return _GO if happened else _TIMEOUT

    def _process_exited(self) -> bool:
        return self.process is None or not self.process.running()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- hooks ----------------------------------------------------------------------------

    def _prestart(self) -> None:
        # nomad: taskrunner/consul_hook.go (Prestart): the token file is (re)written on
        # every start and on restore; CONSUL_TOKEN and CONSUL_HTTP_TOKEN join the env.
        self.dirs.create()
        hook_env: dict[str, str] = {}
        token = self.alloc.task_token(self.name)
        if token is not None:
            self.dirs.write_consul_token(token)
            hook_env = {"CONSUL_TOKEN": token, "CONSUL_HTTP_TOKEN": token}
        client = self.alloc.client
        nomad = nomad_variables(self.alloc.info, self.name, self.dirs, client.address,
                                self.alloc.ports)
        self.env = task_environment(nomad, self.task.env, hook_env, client.host_env,
                                    client.node_attributes())

    def _start_process(self) -> None:
        cwd = self.dirs.local if self.task.cwd is None else Path(self.task.cwd)
        self.process = TaskProcess.spawn(self.task.command, self.env, cwd,
                                         self.dirs.stdout, self.dirs.stderr, self._wake)
        self.processes.append(self.process)
        self._event("Started", f"pid {self.process.pid}")

    def _poststart(self) -> None:
        # nomad: service_hook.go (Poststart) then script_check_hook.go (Poststart)
        workload = self._workload()
        if workload.services:
            self.alloc.client.service_client.register_workload(workload)
            with self._cond:
                self._registered = workload
        self._start_checks(workload)
        self._poststarted.set()

    def _handle_kill(self) -> None:
        """nomad: task_runner.go (handleKill): PreKilling hooks (services deregistered),
        shutdown_delay, then the driver's stop: kill_signal, SIGKILL after kill_timeout."""
        self._event("Killing", f"{self.task.kill_signal}, kill_timeout {self.kill_timeout}s")
        self._deregister_services()  # service_hook.go (PreKilling)
        process = self.process
        if self.task.shutdown_delay and process is not None:
            process.wait(self.task.shutdown_delay)
        self._tracker.killed = True
        if process is not None and process.running():
            process.shutdown(signal.Signals[self.task.kill_signal], self.kill_timeout)
        code = process.exit_code if process is not None else None
        self._event("Killed", f"exit code {code}")

    def _deregister_services(self) -> None:
        with self._cond:
            registered, self._registered = self._registered, None
        if registered is not None:
            self.alloc.client.service_client.remove_workload(registered)

    def _workload(self) -> Workload:
        return self.alloc.workload(self.name, self.task.services)

    # -- script checks --------------------------------------------------------------------

    def _start_checks(self, workload: Workload) -> None:
        self._stop_checks()
        service_client = self.alloc.client.service_client
        for service in workload.services:
            service_id = workload.service_id(service)
            for check in service.checks:
                runner = ScriptCheckRunner(
                    ids.check_id(service_id, check), check.interval, self._probe,
                    service_client.update_ttl,
                    name=f"check-{self.alloc.id[:8]}-{self.name}-{check.name}",
                    backoff_base=self.alloc.client.settings.ttl_update_backoff,
                )
                self._checks.append(runner.start())

    def _stop_checks(self) -> None:
        checks, self._checks = self._checks, []
        for runner in checks:
            runner.stop()

    def _probe(self, run: int) -> tuple[int, str]:
        """What the check script would exit with: the health the test set; an exec into a
        task that is not running fails (critical)."""
        if self._process_exited():
            return 2, "task not running"
        health = self.health
        if health == FLAPPING:
            health = HEALTHY if run % 2 == 0 else UNHEALTHY
        return {HEALTHY: (0, "ok"), WARNING: (1, "warning")}.get(health, (2, health))

    # -- state ----------------------------------------------------------------------------

    def _set_state(self, state: str, event: str | None = None, detail: str = "") -> None:
        self.state = state
        if event:
            self._event(event, detail)
        self.alloc.task_state_changed(self)

    def _event(self, kind: str, detail: str = "") -> None:
        self.events.append(TaskEvent(time.monotonic(), kind, detail))
