"""The part of a Nomad jobspec the model runs: job, group, tasks, services, script checks.

Field names follow the jobspec (HCL) in snake_case; durations are seconds. Defaults are
Nomad's (nomad/structs/structs.go, nomad/structs/services.go), cited where they matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

HEALTHY = "healthy"  # the script exits 0: passing
WARNING = "warning"  # exits 1: warning
UNHEALTHY = "unhealthy"  # any other exit code: critical
FLAPPING = "flapping"  # alternates passing and critical, one run each
APP_HEALTH_STATES = (HEALTHY, WARNING, UNHEALTHY, FLAPPING)

SCRIPT = "script"
# nomad: nomad/structs/services.go (ServiceCheck.validateConsul): Consul's pass/fail
# thresholds are refused for every other check type.
_PASS_FAIL_CHECK_TYPES = ("tcp", "http", "grpc")
_THRESHOLDS = ("success_before_passing", "failures_before_critical", "failures_before_warning")

DEFAULT_KILL_TIMEOUT = 5.0  # nomad: structs.go (DefaultKillTimeout)
# The project's image sets STOPSIGNAL SIGTERM and the docker driver stops with it
# (drivers/docker/handle.go, taskHandle.Kill); exec/raw_exec would default to SIGINT
# (drivers/shared/executor/executor.go, UniversalExecutor.Shutdown).
DEFAULT_KILL_SIGNAL = "SIGTERM"


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Check:
    """A `check { type = "script" }` block: Nomad runs the script inside the task every
    `interval` and heartbeats a Consul TTL check with the result; here the test decides
    the result (`Allocation.set_health`). `command`/`args` only feed the check ID."""

    name: str
    interval: float = 10.0
    timeout: float = 2.0
    type: str = SCRIPT
    command: str = "/bin/true"
    args: tuple[str, ...] = ()
    initial_status: str = ""
    on_update: str = "require_healthy"
    notes: str = ""
    success_before_passing: int = 0
    failures_before_critical: int = 0
    failures_before_warning: int = 0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"check {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        # nomad: nomad/structs/services.go (ServiceCheck.validateConsul), same messages.
        # Nomad also refuses an interval or timeout below 1 s (minCheckInterval); the
        # model accepts shorter ones so that tests run in a fraction of a second.
        if self.type != SCRIPT:
            return f"the model runs script checks only, not {self.type!r}"
        if self.interval <= 0:
            return "missing required value interval"
        if self.timeout <= 0:
            return "missing required value timeout"
        for threshold in _THRESHOLDS:
            value = getattr(self, threshold)
            if value < 0:
                return f"{threshold} must be non-negative"
            if value > 0 and self.type not in _PASS_FAIL_CHECK_TYPES:
                return f"{threshold} not supported for check of type {self.type!r}"
        return None

    def hash_fields(self) -> tuple[str, ...]:
        """What ServiceCheck.Hash covers (nomad/structs/services.go), for the check ID."""
        return (
            self.name, self.type, self.command, "".join(self.args), "", "", "",
            f"{self.interval!r}", f"{self.timeout!r}", "", "", self.on_update, self.notes,
            *(f"{name}={getattr(self, name)}" for name in _THRESHOLDS if getattr(self, name)),
        )


@dataclass(frozen=True)
class Service:
    """A `service` block with `provider = "consul"` on a task or a group."""

    name: str
    port_label: str
    tags: tuple[str, ...] = ()
    canary_tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    canary_meta: Mapping[str, str] = field(default_factory=dict)
    enable_tag_override: bool = False
    # `tagged_addresses { lan = "10.0.0.1:80" }`; a value without a port takes the
    # service's port (service_client.go, parseAddress).
    tagged_addresses: Mapping[str, str] = field(default_factory=dict)
    weights: tuple[int, int] | None = None  # (passing, warning)
    address: str = ""  # `address`: overrides the host address (address_mode "auto")
    kind: str = ""
    checks: tuple[Check, ...] = ()
    # A workload identity for Consul (`identity` block, or Nomad's default service
    # identity): with ACLs on, registrations of this service use its own token.
    identity: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _frozen(self.meta))
        object.__setattr__(self, "canary_meta", _frozen(self.canary_meta))
        object.__setattr__(self, "tagged_addresses", _frozen(self.tagged_addresses))


@dataclass(frozen=True)
class Lifecycle:
    """`lifecycle { hook = "prestart" sidecar = true }`: the only hook the model runs."""

    hook: str = "prestart"
    sidecar: bool = True

    def __post_init__(self) -> None:
        if (self.hook, self.sidecar) != ("prestart", True):
            raise ValueError("the model runs main tasks and prestart sidecar tasks only")


@dataclass(frozen=True)
class Task:
    """A task run as a local process (raw_exec-like, with docker's stop signal)."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[Service, ...] = ()
    lifecycle: Lifecycle | None = None
    leader: bool = False
    kill_timeout: float = DEFAULT_KILL_TIMEOUT
    kill_signal: str = DEFAULT_KILL_SIGNAL
    shutdown_delay: float = 0.0
    # The task's Consul workload identity (`consul_default`): with ACLs on, the task gets
    # its own token in secrets/consul_token and CONSUL_TOKEN/CONSUL_HTTP_TOKEN.
    consul_identity: bool = False
    cwd: str | None = None  # None: the task directory, as raw_exec does

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", _frozen(self.env))
        object.__setattr__(self, "command", tuple(self.command))

    @property
    def is_sidecar(self) -> bool:
        return self.lifecycle is not None and self.lifecycle.sidecar


@dataclass(frozen=True)
class RestartPolicy:
    """`restart` block; defaults: DefaultServiceJobRestartPolicy (nomad/structs/structs.go)."""

    attempts: int = 2
    interval: float = 30 * 60.0
    delay: float = 15.0
    mode: str = "fail"

    def __post_init__(self) -> None:
        if self.mode not in ("fail", "delay"):
            raise ValueError(f"restart mode must be fail or delay, not {self.mode!r}")


@dataclass(frozen=True)
class Migrate:
    """`migrate` block; defaults: DefaultMigrateStrategy (nomad/structs/structs.go)."""

    max_parallel: int = 1
    min_healthy_time: float = 10.0


@dataclass(frozen=True)
class TaskGroup:
    name: str
    tasks: tuple[Task, ...]
    count: int = 1
    services: tuple[Service, ...] = ()
    # Port labels of the group network; each allocation gets its own dynamic port.
    ports: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy()
    migrate: Migrate = Migrate()
    shutdown_delay: float = 0.0

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"group {self.name!r} has no task {name!r}")


@dataclass(frozen=True)
class Job:
    id: str
    groups: tuple[TaskGroup, ...]
    namespace: str = "default"
    datacenter: str = "dc1"
    region: str = "global"
    type: str = "service"

    def group(self, name: str) -> TaskGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"job {self.id!r} has no group {name!r}")
