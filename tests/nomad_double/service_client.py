"""Nomad's Consul service client: one per Nomad client agent, one sync loop against its
own node's Consul agent.

nomad: command/agent/consul/service_client.go (ServiceClient: NewServiceClient, Run,
commit, merge, sync, syncRemoveService, RegisterWorkload, UpdateWorkload,
RemoveWorkload, UpdateTTL, AllocRegistrations, Shutdown, clearExplicitlyDeregistered)
and command/agent/consul/version_checker.go (checkConsulTLSSkipVerify: the first contact).

The stored copy (`stored_service`) is Nomad's `c.services`: what it pushes to Consul. It
changes when a workload is registered or updated, and, under enable_tag_override, when a
periodic sync adopts the agent's tags into it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import ids
from .compare import (
    SYNC_OPERATIONS,
    SYNC_PERIODIC,
    SYNC_REASONS,
    SYNC_SHUTDOWN,
    update_required,
)
from .consul_api import DEFAULT_REQUEST_TIMEOUT, AgentClient, ConsulError
from .registrations import (
    TTL_CHECK_BUFFER,
    Operations,
    Registration,
    Workload,
    service_registration,
)

DEFAULT_PERIOD = 30.0  # nomad: service_client.go (defaultPeriodicInterval)
DEFAULT_PROBATION = 60.0  # nomad: service_client.go (deregisterProbationPeriod)
DEFAULT_RETRY_INTERVAL = 1.0  # nomad: service_client.go (defaultRetryInterval)
DEFAULT_MAX_RETRY_INTERVAL = 30.0  # nomad: service_client.go (defaultMaxRetryInterval)
DEFAULT_SHUTDOWN_WAIT = 60.0  # nomad: service_client.go (defaultShutdownWait)
CONTACT_BACKOFF_BASE = 1.0  # nomad: version_checker.go (checkConsulTLSSkipVerify)
CONTACT_BACKOFF_LIMIT = 20.0
SYNC_LOG_LENGTH = 2000


@dataclass(frozen=True)
class SyncSettings:
    """The service client's timings, Nomad's defaults unless a test shortens them."""

    period: float = DEFAULT_PERIOD
    probation: float = DEFAULT_PROBATION
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    max_retry_interval: float = DEFAULT_MAX_RETRY_INTERVAL
    shutdown_wait: float = DEFAULT_SHUTDOWN_WAIT
    ttl_check_buffer: float = TTL_CHECK_BUFFER
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    contact_backoff_base: float = CONTACT_BACKOFF_BASE
    contact_backoff_limit: float = CONTACT_BACKOFF_LIMIT
    # script_check_hook.go (updateTTLBackoffBaseline): a heartbeat that fails (the check
    # is not registered yet, say) is retried once after this long.
    ttl_update_backoff: float = 1.0


@dataclass(frozen=True)
class SyncRecord:
    """One pass of ServiceClient.sync: why, when (monotonic), what it wrote, what failed."""

    reason: str
    started: float
    finished: float
    registered: tuple[str, ...] = ()  # services that were missing
    reregistered: tuple[str, ...] = ()  # services that existed but differed
    deregistered: tuple[str, ...] = ()
    checks_registered: tuple[str, ...] = ()
    checks_deregistered: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SyncCounters:
    syncs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SYNC_REASONS, 0))
    failed_syncs: int = 0
    service_registrations: int = 0
    service_reregistrations: int = 0
    service_deregistrations: int = 0
    check_registrations: int = 0
    check_deregistrations: int = 0

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())


@dataclass(frozen=True)
class RegisteredCheck:
    """A check Nomad registered for an allocation, with what Consul's agent says of it
    (status None: the agent does not have it)."""

    service_id: str
    check_id: str
    name: str
    on_update: str
    status: str | None


@dataclass
class _Pass:
    """What one sync did, accumulated while it runs."""

    registered: list[str] = field(default_factory=list)
    reregistered: list[str] = field(default_factory=list)
    deregistered: list[str] = field(default_factory=list)
    checks_registered: list[str] = field(default_factory=list)
    checks_deregistered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class _SyncRequest:
    reason: str
    done: threading.Event = field(default_factory=threading.Event)
    record: SyncRecord | None = None


# alloc ID -> workload name -> service ID -> check ID -> (check name, on_update)
_AllocRegistrations = dict[str, dict[str, dict[str, dict[str, tuple[str, str]]]]]


class ServiceClient:
    """Nomad's ServiceClient for one Nomad client. Thread-safe; `start()` runs the loop
    in one thread, `shutdown()` (final sync) or `abandon()` (none) ends it."""

    def __init__(self, agent: AgentClient, settings: SyncSettings | None = None,
                 name: str = "nomad-client") -> None:
        self.agent = agent
        self.settings = settings or SyncSettings()
        self.name = name
        self._period = self.settings.period
        self._cond = threading.Condition()
        # Nomad's c.services / c.checks: only the loop thread changes them (under the
        # lock, so that readers get a consistent copy).
        self._services: dict[str, Registration] = {}
        self._checks: dict[str, Registration] = {}
        self._explicit_services: set[str] = set()
        self._explicit_checks: set[str] = set()
        self._tokens: dict[str, str] = {}  # service ID -> workload identity token
        self._allocs: _AllocRegistrations = {}
        self._pending: deque[tuple[int, Operations]] = deque()
        self._requests: deque[_SyncRequest] = deque()
        self._committed = 0
        self._merged = 0
        self._synced = 0
        self._shutdown = False
        self._abandoned = False
        self._contacted = False
        # nomad: service_client.go (NewServiceClient): probation starts with the client.
        self._probation_expiry = time.monotonic() + self.settings.probation
        self._counters = SyncCounters()
        self._log: deque[SyncRecord] = deque(maxlen=SYNC_LOG_LENGTH)
        self._deadline = 0.0  # when the retry/period timer fires (monotonic)
        self._last_success: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-consul-sync",
                                        daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ServiceClient:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """nomad: service_client.go (Shutdown): one last sync of whatever is queued, bounded
        by shutdown_wait. Task services stay registered; Nomad removes only its agent's
        own services (not modelled)."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(self.settings.shutdown_wait)

    def abandon(self, timeout: float = 5.0) -> None:
        """The Nomad process dies (SIGKILL): the loop ends without another request."""
        with self._cond:
            self._shutdown = self._abandoned = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- workloads (called by the allocation's hooks) ---------------------------------------

    def register_workload(self, workload: Workload) -> int:
        """nomad: service_client.go (RegisterWorkload): build, remember tokens, commit."""
        ops = Operations()
        registrations: dict[str, dict[str, tuple[str, str]]] = {}
        tokens: dict[str, str] = {}
        for service in workload.services:
            service_id = self._add_service(ops, workload, service, registrations)
            if service.name in workload.tokens:
                tokens[service_id] = workload.tokens[service.name]
        with self._cond:
            self._tokens.update(tokens)
            self._allocs.setdefault(workload.alloc_id, {})[workload.name] = registrations
        return self.commit(ops)

    def update_workload(self, old: Workload, new: Workload) -> int:
        """nomad: service_client.go (UpdateWorkload). A changed service is rendered and
        queued again; every check of a service that stays is queued again too (as Nomad
        does), so any update of a workload with checks starts an operations sync."""
        ops = Operations()
        registrations: dict[str, dict[str, tuple[str, str]]] = {}
        tokens: dict[str, str] = {}
        new_by_id = {new.service_id(service): service for service in new.services}
        to_render = dict(new_by_id)
        for old_service in old.services:
            service_id = old.service_id(old_service)
            new_service = new_by_id.get(service_id)
            if new_service is None:
                ops.dereg_services.append(service_id)
                ops.dereg_checks.extend(ids.check_id(service_id, c) for c in old_service.checks)
                continue
            old_body, _ = service_registration(old, old_service, self.settings.ttl_check_buffer)
            body, checks = service_registration(new, new_service, self.settings.ttl_check_buffer)
            if (old.canary, old_body) == (new.canary, body):
                del to_render[service_id]  # unchanged: the service itself is not queued
            ops.reg_checks.extend(checks)
            registrations[service_id] = _check_names(new_service, checks)
            kept = {check["ID"] for check in checks}
            ops.dereg_checks.extend(
                cid for cid in (ids.check_id(service_id, c) for c in old_service.checks)
                if cid not in kept)
        for service in to_render.values():
            self._add_service(ops, new, service, registrations)
        for service in new.services:
            if service.name in new.tokens:
                tokens[new.service_id(service)] = new.tokens[service.name]
        with self._cond:
            self._tokens.update(tokens)
            self._allocs.setdefault(new.alloc_id, {})[new.name] = registrations
        return self.commit(ops)

    def remove_workload(self, workload: Workload) -> int:
        """nomad: service_client.go (RemoveWorkload): deregistration is queued; the sync
        loop removes the services with the Nomad agent's token."""
        ops = Operations()
        for service in workload.services:
            service_id = workload.service_id(service)
            ops.dereg_services.append(service_id)
            ops.dereg_checks.extend(ids.check_id(service_id, c) for c in service.checks)
        with self._cond:
            workloads = self._allocs.get(workload.alloc_id, {})
            workloads.pop(workload.name, None)
            if not workloads:
                self._allocs.pop(workload.alloc_id, None)
        return self.commit(ops)

    def commit(self, ops: Operations) -> int:
        """nomad: service_client.go (commit): empty operations and operations after
        shutdown are dropped. Returns a sequence number for `wait_synced`. (Nomad's
        channel holds 8 operations and then blocks the caller; this queue does not.)"""
        with self._cond:
            if ops.empty() or self._shutdown:
                return self._committed
            self._committed += 1
            self._pending.append((self._committed, ops))
            self._cond.notify_all()
            return self._committed

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """nomad: service_client.go (UpdateTTL): heartbeat with the service's token."""
        with self._cond:
            check = self._checks.get(check_id)
            token = self._tokens.get(check["ServiceID"]) if check else None
        self.agent.update_ttl(check_id, status, output, token)

    def alloc_checks(self, alloc_id: str) -> list[RegisteredCheck] | None:
        """nomad: service_client.go (AllocRegistrations): the checks Nomad registered for an
        allocation, with their status on the agent. None when it has no registration."""
        with self._cond:
            workloads = copy.deepcopy(self._allocs.get(alloc_id))
        if workloads is None:
            return None
        agent_checks = self.agent.checks()
        return [
            RegisteredCheck(service_id, check_id, name, on_update,
                            (agent_checks.get(check_id) or {}).get("Status"))
            for services in workloads.values()
            for service_id, checks in services.items()
            for check_id, (name, on_update) in checks.items()
        ]

    # -- control and inspection (tests, chaos, benchmarks) -----------------------------------

    def sync_now(self, reason: str = SYNC_PERIODIC, timeout: float = 10.0) -> SyncRecord:
        """Run one sync on the loop thread now and return its record. `periodic` is the
        timer firing early; `operations` is what any operation of any allocation of this
        client starts (Nomad syncs everything then). Either restarts the period timer."""
        if reason not in (SYNC_PERIODIC, SYNC_OPERATIONS):
            raise ValueError(f"reason must be {SYNC_PERIODIC!r} or {SYNC_OPERATIONS!r}")
        request = _SyncRequest(reason)
        with self._cond:
            if self._shutdown or not self._thread.is_alive():
                raise RuntimeError(f"{self.name}: the sync loop is not running")
            self._requests.append(request)
            self._cond.notify_all()
        if not request.done.wait(timeout):
            raise TimeoutError(f"{self.name}: no sync within {timeout:.1f}s")
        if request.record is None:
            raise RuntimeError(f"{self.name}: the sync loop ended first")
        return request.record

    def set_period(self, seconds: float, rearm: bool = True) -> None:
        """Change the periodic interval. Nomad reads its field when the timer is next
        reset (after the next sync): that is `rearm=False`. By default the running timer
        is re-armed too, to fire `seconds` after the last sync, so that a long period
        shortened by a test takes effect at once."""
        if seconds <= 0:
            raise ValueError("the period must be positive")
        with self._cond:
            self._period = seconds
            if rearm and self._last_success is not None:
                self._deadline = self._last_success + seconds
                self._cond.notify_all()

    @property
    def period(self) -> float:
        with self._cond:
            return self._period

    def wait_synced(self, sequence: int, timeout: float) -> bool:
        """Wait until a successful sync has included the operations of `sequence`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._synced < sequence:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything committed so far has been synced successfully."""
        with self._cond:
            committed = self._committed
        return self.wait_synced(committed, timeout)

    def wait_for_sync(self, after: float, timeout: float, reason: str | None = None
                      ) -> SyncRecord:
        """The first sync that started after `after` (monotonic), of `reason` if given."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self._log:
                    if record.started > after and reason in (None, record.reason):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name}: no {reason or ''} sync after {after:.3f}"
                                       f" within {timeout:.1f}s")
                self._cond.wait(remaining)

    def stored_service(self, service_id: str) -> Registration | None:
        with self._cond:
            stored = self._services.get(service_id)
            return copy.deepcopy(stored) if stored is not None else None

    def stored_services(self) -> dict[str, Registration]:
        with self._cond:
            return copy.deepcopy(self._services)

    def stored_checks(self) -> dict[str, Registration]:
        with self._cond:
            return copy.deepcopy(self._checks)

    def counters(self) -> SyncCounters:
        with self._cond:
            return replace(self._counters, syncs=dict(self._counters.syncs))

    def sync_log(self) -> list[SyncRecord]:
        with self._cond:
            return list(self._log)

    @property
    def in_probation(self) -> bool:
        return time.monotonic() < self._probation_expiry

    @property
    def probation_expiry(self) -> float:
        return self._probation_expiry

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._await_contact():
                self._loop()
        finally:
            with self._cond:
                self._fail_requests()
                self._cond.notify_all()

    def _await_contact(self) -> bool:
        """nomad: service_client.go (Run, INIT) + version_checker.go: operations are merged
        but nothing is synced until the agent has answered `/v1/agent/self` once, retried
        with helper.Backoff (1 s doubling to 20 s)."""
        attempts = 0
        while True:
            with self._cond:
                self._merge_all_pending()
                if self._shutdown:
                    return False
            with contextlib.suppress(ConsulError):
                self.agent.self_info()
                self._contacted = True
                return True
            backoff = min(self.settings.contact_backoff_base * 2 ** attempts,
                          self.settings.contact_backoff_limit)
            attempts += 1
            with self._cond:
                self._cond.wait_for(lambda: self._shutdown, backoff)

    def _loop(self) -> None:
        """nomad: service_client.go (Run): sync at once, then on each operation and when
        the timer fires; every sync restarts the timer (period after a success, a backoff
        of retry_interval x failures up to max_retry_interval after a failure)."""
        with self._cond:
            self._deadline = time.monotonic()
        failures = 0
        while True:
            request, reason, merged = self._next_trigger()
            if reason is None:
                return  # abandoned
            record = self._sync(reason)
            failures = 0 if record.ok else failures + 1
            with self._cond:
                if record.ok:
                    self._last_success = time.monotonic()
                    self._deadline = self._last_success + self._period
                else:
                    self._deadline = time.monotonic() + min(
                        self.settings.retry_interval * failures,
                        self.settings.max_retry_interval)
            if self._finish(record, request, merged):
                return

    def _next_trigger(self) -> tuple[_SyncRequest | None, str | None, int]:
        """What starts the next sync. Go's select picks at random among ready cases; the
        model takes shutdown, then one queued operation, then a sync_now request, then
        the timer."""
        with self._cond:
            while True:
                if self._abandoned:
                    return None, None, self._merged
                if self._shutdown:
                    self._merge_all_pending()
                    return None, SYNC_SHUTDOWN, self._merged
                if self._pending:
                    self._merge(*self._pending.popleft())
                    return None, SYNC_OPERATIONS, self._merged
                if self._requests:
                    request = self._requests.popleft()
                    return request, request.reason, self._merged
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return None, SYNC_PERIODIC, self._merged
                self._cond.wait(remaining)

    def _finish(self, record: SyncRecord, request: _SyncRequest | None, merged: int) -> bool:
        """Book-keeping after a sync; True when the loop should end (Run's shutdown check:
        operations still queued are merged and synced before it returns)."""
        with self._cond:
            self._log.append(record)
            self._count(record)
            if record.ok:
                self._synced = max(self._synced, merged)
                self._clear_explicitly_deregistered()
            if request is not None:
                request.record = record
                request.done.set()
            self._cond.notify_all()
            return self._shutdown and (self._abandoned or not self._pending)

    def _merge(self, sequence: int, ops: Operations) -> None:
        # nomad: service_client.go (merge)
        for service in ops.reg_services:
            self._services[service["ID"]] = service
        for check in ops.reg_checks:
            self._checks[check["ID"]] = check
        for service_id in ops.dereg_services:
            self._services.pop(service_id, None)
            self._explicit_services.add(service_id)
        for check_id in ops.dereg_checks:
            self._checks.pop(check_id, None)
            self._explicit_checks.add(check_id)
        self._merged = sequence

    def _merge_all_pending(self) -> None:
        while self._pending:
            self._merge(*self._pending.popleft())

    def _clear_explicitly_deregistered(self) -> None:
        # nomad: service_client.go (clearExplicitlyDeregistered, gcDeregisteredServiceTokens)
        for service_id in self._explicit_services:
            self._tokens.pop(service_id, None)
        self._explicit_services.clear()
        self._explicit_checks.clear()

    def _fail_requests(self) -> None:
        for request in self._requests:
            request.done.set()
        self._requests.clear()

    def _count(self, record: SyncRecord) -> None:
        counters = self._counters
        syncs = dict(counters.syncs)
        syncs[record.reason] += 1
        self._counters = replace(
            counters,
            syncs=syncs,
            failed_syncs=counters.failed_syncs + (0 if record.ok else 1),
            service_registrations=counters.service_registrations
            + len(record.registered) + len(record.reregistered),
            service_reregistrations=counters.service_reregistrations + len(record.reregistered),
            service_deregistrations=counters.service_deregistrations + len(record.deregistered),
            check_registrations=counters.check_registrations + len(record.checks_registered),
            check_deregistrations=counters.check_deregistrations
            + len(record.checks_deregistered),
        )

    # -- one sync ---------------------------------------------------------------------------

    def _sync(self, reason: str) -> SyncRecord:
        """nomad: service_client.go (sync), against the agent's view of its own node:
        remove unknown Nomad services, register missing or different ones, then the same
        for checks. Errors of single writes are collected and fail the sync (retry)."""
        started = time.monotonic()
        done = _Pass()
        try:
            self._sync_services(reason, done)
            self._sync_checks(done)
        except ConsulError as error:
            done.errors.append(str(error))
        return SyncRecord(
            reason=reason, started=started, finished=time.monotonic(),
            registered=tuple(done.registered), reregistered=tuple(done.reregistered),
            deregistered=tuple(done.deregistered),
            checks_registered=tuple(done.checks_registered),
            checks_deregistered=tuple(done.checks_deregistered),
            error="; ".join(done.errors) or None,
        )

    def _sync_services(self, reason: str, done: _Pass) -> None:
        in_consul = self.agent.services()  # the Nomad agent's own token
        in_probation = self.in_probation
        for service_id in sorted(in_consul):
            if self._should_remove_service(service_id, in_probation):
                self._attempt(done, partial(self._remove_service, service_id, in_consul),
                              done.deregistered, service_id)
        for service_id, body, token, exists in self._services_to_register(reason, in_consul):
            target = done.reregistered if exists else done.registered
            self._attempt(done, partial(self.agent.register_service, body, exists, token),
                          target, service_id)

    def _should_remove_service(self, service_id: str, in_probation: bool) -> bool:
        with self._cond:
            known = service_id in self._services
            explicit = service_id in self._explicit_services
        if known or not ids.is_nomad_service(service_id):
            return False  # never another owner's service (isNomadService)
        if in_probation and not explicit:
            return False  # restored tasks may still claim it
        return not ids.maybe_connect_sidecar(service_id)

    def _remove_service(self, service_id: str, in_consul: dict[str, Any]) -> None:
        # nomad: service_client.go (syncRemoveService): its Connect sidecar first.
        sidecar_id = service_id + ids.SIDECAR_SUFFIX
        if sidecar_id in in_consul:
            self.agent.deregister_service(sidecar_id)
        self.agent.deregister_service(service_id)

    def _services_to_register(self, reason: str, in_consul: dict[str, Any]
                              ) -> Iterator[tuple[str, Registration, str | None, bool]]:
        with self._cond:
            wanted_ids = sorted(self._services)
        for service_id in wanted_ids:
            existing = in_consul.get(service_id)
            with self._cond:
                wanted = self._services.get(service_id)
                if wanted is None:
                    continue
                # `wanted` is the stored copy itself: a periodic sync's tag adoption sticks.
                if existing is not None and not update_required(reason, wanted, existing):
                    continue
                body, token = copy.deepcopy(wanted), self._tokens.get(service_id)
            # nomad: sync: replace-existing-checks whenever the service already exists.
            yield service_id, body, token, existing is not None

    def _sync_checks(self, done: _Pass) -> None:
        in_consul = self.agent.checks()
        in_probation = self.in_probation
        for check_id in sorted(in_consul):
            if self._should_remove_check(check_id, in_consul[check_id], in_probation):
                self._attempt(done, partial(self.agent.deregister_check, check_id),
                              done.checks_deregistered, check_id)
        with self._cond:
            missing = [(cid, copy.deepcopy(check), self._tokens.get(check["ServiceID"]))
                       for cid, check in sorted(self._checks.items()) if cid not in in_consul]
        for check_id, body, token in missing:
            self._attempt(done, partial(self.agent.register_check, body, token),
                          done.checks_registered, check_id)

    def _should_remove_check(self, check_id: str, check: dict[str, Any],
                             in_probation: bool) -> bool:
        with self._cond:
            known = check_id in self._checks
            explicit = check_id in self._explicit_checks
        if known:
            return False
        if not (ids.is_nomad_service(check.get("ServiceID", "")) and ids.is_nomad_check(check_id)):
            return False
        if in_probation and not explicit and ids.is_current_check_format(check_id):
            return False
        return not ids.maybe_sidecar_proxy_check(check_id)

    @staticmethod
    def _attempt(done: _Pass, write: Callable[[], None], succeeded: list[str],
                 what: str) -> None:
        try:
            write()
        except ConsulError as error:
            done.errors.append(str(error))
        else:
            succeeded.append(what)

    def _add_service(self, ops: Operations, workload: Workload, service: Any,
                     registrations: dict[str, dict[str, tuple[str, str]]]) -> str:
        # nomad: service_client.go (serviceRegs)
        body, checks = service_registration(workload, service, self.settings.ttl_check_buffer)
        ops.reg_services.append(body)
        ops.reg_checks.extend(checks)
        registrations[body["ID"]] = _check_names(service, checks)
        return str(body["ID"])


def _check_names(service: Any, checks: list[Registration]) -> dict[str, tuple[str, str]]:
    return {registration["ID"]: (registration["Name"], check.on_update)
            for registration, check in zip(checks, service.checks, strict=True)}
