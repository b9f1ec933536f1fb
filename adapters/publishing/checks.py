"""TTL health checks that make a stale sidecar look unhealthy, and let Consul expire it at TTL.

Two kinds, both TTL checks, passed only when the machine says its state is confirmed:

* the **lease check**, on a small service the sidecar registers for itself. The session is
  bound to it (ServiceChecks), so a crashed or paused sidecar loses its session when the check
  expires, at TTL, not at Consul's 2 x TTL session timer. It lives on our own service because
  Nomad re-registers its services with replace-existing-checks, which would deregister a
  check of ours on them and so invalidate the session (consul-semantics §1.5, §7).
* a **role check** on each instance the sidecar publishes (its own registration for each
  target, `CONSUL_LEADER_PUBLISH=registration`), so `health/service/<name>?tag=<primary>&passing`
  drops an instance whose sidecar can no longer confirm its role (paused, wedged, cut off),
  even while its primary label is still there. The session binds to these too, so it ends
  when the role can no longer be vouched for. In the seed-compatible mode there are none:
  nothing of ours may be written into the target's own registration.

Order matters. A role check must stop passing *before* the lease check does: otherwise a
dead leader's session is invalidated (lease check expired), a follower takes over, and the
dead leader's role check still passes for a moment, listing two primaries. So role checks
get a shorter TTL than the lease check; each round passes its checks at once (in a row, a
slow agent would let the lease check lapse).

There is no "registered" flag to go stale: the lease check is registered again before every
session is created, and a pass that Consul answers "unknown check" (a 404, or a 500 from
Consul before 1.11) registers that check again and passes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from consul_leader.adapters.consul.port import ConsulError, ConsulPort, log_level
from consul_leader.adapters.controller import Post
from consul_leader.adapters.durations import format_duration
from consul_leader.adapters.publishing.labels import (
    alias_check_id,
    owned_service_id,
    role_check_body,
    role_check_id,
)
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader.checks")

LEASE_SERVICE_NAME = "consul-leader"
# Consul reaps a crashed sidecar's own service after its check has been critical this long.
LEASE_SERVICE_REAP_AFTER = "10m"
PASS_WORKERS = 4


def lease_service_id(instance: str) -> str:
    return f"consul-leader-{instance}"


def lease_check_id(instance: str) -> str:
    return f"consul-leader:lease:{instance}"


@dataclass(frozen=True)
class ChecksSettings:
    enabled: bool
    instance: str  # stable across restarts of the same task (the allocation ID)
    service_name: str
    kv_path: str
    ttl_text: str
    timings: Timings
    # Registration mode: who owns the instances the role checks live on; None: no role checks.
    owner: str | None = None
    # The health gate: the session binds to the alias check of each instance as well.
    bind_alias: bool = False


@dataclass(frozen=True)
class _Round:
    lease: bool
    roles: bool
    valid_until: float | None
    note: str

    def joined(self, later: _Round) -> _Round:
        """Both rounds in one, vouching until the later one's deadline."""
        return _Round(self.lease or later.lease, self.roles or later.roles,
                      later.valid_until, later.note)


class HealthChecks:
    def __init__(self, settings: ChecksSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self._executor = executor or ThreadPoolExecutor(
            max_workers=PASS_WORKERS, thread_name_prefix="check-pass")
        self.wake: Callable[[], None] = lambda: None
        self.lease_service_id = lease_service_id(settings.instance)
        self._lease_check_id = lease_check_id(settings.instance)
        self._role_ttl_text = format_duration(self._timings.role_check_ttl)
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] = ()
        self._prepare_wanted = False
        self._prepare_due = 0.0
        self._prepare_failures = 0
        self._round: _Round | None = None
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    @property
    def lease_check_id(self) -> str | None:
        return self._lease_check_id if self.enabled else None

    # -- instructions ---------------------------------------------------------------------

    def set_targets(self, targets: Sequence[str]) -> None:
        with self._lock:
            self._targets = tuple(targets)

    def prepare_lease_check(self) -> None:
        """Register the lease check (again) and pass it, then post `lease_check_passed`."""
        with self._lock:
            self._prepare_wanted, self._prepare_due = True, self._clock()
        self.wake()

    def pass_round(self, *, lease: bool, roles: bool, valid_until: float | None,
                   note: str = "lease renewed") -> None:
        """Pass the lease check and/or the role checks, while `valid_until` lasts. A round
        asked for before the previous one went out joins it: none of its checks is dropped."""
        wanted = _Round(lease, roles, valid_until, note)
        with self._lock:
            self._round = wanted if self._round is None else self._round.joined(wanted)
        self.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._prepare_wanted, self._round = False, None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def deregister_all(self, timeout: float) -> None:
        """Clean shutdown: take our checks and our own service away (best effort)."""
        if not self.enabled:
            return
        # The role checks go with the instances they live on (the publisher's to withdraw).
        self._try(partial(self._port.service_deregister, self.lease_service_id, timeout=timeout))

    # -- the worker's step ----------------------------------------------------------------

    def step(self) -> float | None:
        with self._lock:
            if self._stopping or not self.enabled:
                return None
            prepare = self._prepare_wanted and self._clock() >= self._prepare_due
            wanted_round, self._round = self._round, None
        if prepare:
            self._prepare()
        if wanted_round is not None:
            self._pass_round(wanted_round)
        with self._lock:
            return self._prepare_due if self._prepare_wanted else None

    def _prepare(self) -> None:
        try:
            self._register_lease_service()
            # The new session binds to all of them: each must pass first.
            self._pass_all(_Round(lease=True, roles=True, valid_until=None,
                                  note="session being created"))
        except ConsulError as exc:
            with self._lock:
                self._prepare_due = self._clock() + self._timings.backoff(self._prepare_failures)
                self._prepare_failures += 1
            log.log(log_level(exc), "cannot prepare the lease check, retrying",
                    extra={"error": str(exc)})
            return
        with self._lock:
            self._prepare_wanted, self._prepare_failures = False, 0
        bound = (self._lease_check_id, *self._role_check_ids(), *self._alias_check_ids())
        self._post(Event.LEASE_CHECK_PASSED, "lease check registered and passed",
                   Facts(check_id=self._lease_check_id, checks=bound))

    def _pass_round(self, wanted: _Round) -> None:
        try:
            self._pass_all(wanted)
        except ConsulError as exc:
            # The next renew asks for another round; the TTLs leave room for a miss.
            log.log(log_level(exc), "passing the health checks failed", extra={"error": str(exc)})

    def _pass_all(self, wanted: _Round) -> None:
        """All at once: against a slow agent, one pass after another would let the lease
        check lapse (the role checks' shorter TTL keeps their expiry first). The lease pass
        goes out even if a role pass fails: a missed role pass only makes that instance look
        unhealthy for a while, a missed lease pass would cost the session."""
        checks: list[tuple[str, str | None]] = []
        if wanted.roles and self._settings.owner is not None:
            checks += [(role_check_id(target), target) for target in self._current_targets()]
        if wanted.lease:
            checks.append((self._lease_check_id, None))
        futures = [self._executor.submit(self._pass, check_id, target, wanted)
                   for check_id, target in checks]
        errors = [exc for future in futures if isinstance(exc := future.exception(), Exception)]
        if errors:
            raise errors[0]

    def _pass(self, check_id: str, target: str | None, wanted: _Round) -> None:
        if wanted.valid_until is not None and self._clock() >= wanted.valid_until:
            return  # the state this pass would vouch for is no longer confirmed
        timeout = self._timings.request_timeout
        if self._port.check_pass(check_id, wanted.note, timeout=timeout):
            return
        # Consul lost it (reaped after an outage, or Nomad replaced the target's checks).
        if target is None:
            self._register_lease_service()
        elif not self._register_role_check(target):
            return  # the target itself is gone: nothing to vouch for
        self._port.check_pass(check_id, wanted.note, timeout=timeout)

    # -- registrations --------------------------------------------------------------------

    def _register_lease_service(self) -> None:
        settings = self._settings
        body = {
            "ID": self.lease_service_id,
            "Name": LEASE_SERVICE_NAME,
            "Tags": [settings.service_name],
            "Meta": {"lock_key": settings.kv_path[:512]},
            "Check": {
                "CheckID": self._lease_check_id,
                "Name": "consul-leader lease",
                "Notes": "Passed after each confirmed session renew; the session is bound to it.",
                "TTL": settings.ttl_text,
                # Critical until a pass vouches for it (an existing check keeps its status).
                "Status": "critical",
                # A crashed sidecar's own service would otherwise stay, critical, for ever.
                "DeregisterCriticalServiceAfter": LEASE_SERVICE_REAP_AFTER,
            },
        }
        self._port.service_register(body, timeout=self._timings.request_timeout)

    def _register_role_check(self, target: str) -> bool:
        """The role check on our instance for `target` (False: that instance is not there;
        the publisher registers it with its checks)."""
        owner = self._settings.owner
        if owner is None:
            return False
        body = role_check_body(target, self._role_ttl_text,
                               service_id=owned_service_id(owner, target))
        return self._port.check_register(body, timeout=self._timings.request_timeout)

    def _role_check_ids(self) -> tuple[str, ...]:
        if self._settings.owner is None:
            return ()
        return tuple(role_check_id(target) for target in self._current_targets())

    def _alias_check_ids(self) -> tuple[str, ...]:
        if self._settings.owner is None or not self._settings.bind_alias:
            return ()
        return tuple(alias_check_id(target) for target in self._current_targets())

    def _current_targets(self) -> tuple[str, ...]:
        with self._lock:
            return self._targets

    def _try(self, call: Callable[[], object]) -> None:
        try:
            call()
        except ConsulError as exc:
            log.warning("cleanup request failed", extra={"error": str(exc)})
