"""The publisher: makes Consul show the role the machine asked for, and reports what it sees.

The machine says which role to publish (`publish`); the step makes the agent's view match it
on every target service and posts the outcome as events: `targets_found`, `replica_published`
/ `primary_published` (once per request, when Consul shows it on every target),
`publish_refused` (Consul denied a write), `target_gone` (a target deregistered for longer than
its grace), and, before the primary label goes on, `other_primary_seen` while another instance
is still a passing primary and `other_primary_wait_over` if it still is at the deadline the
machine set (`hold_for_other_primary_until`). The publisher never decides anything about
leadership: it only applies what it is asked, never labels primary over another passing
primary unless told to (`publish_over_other_primary`), and never writes the primary label on
a lease that has run out (`extend` keeps it informed).

Tags are changed by re-registering the complete definition through the agent API (§4.3, §7):
registration decoding is strict and replaces the definition wholesale, so the body is built
from exactly the fields a registration accepts. Checks are kept (no replace-existing-checks).
A watch per target blocks on the service's content hash (consul-semantics §3), so that when
someone else re-registers it (Nomad's sync, an operator) the labels are back within a round
trip.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consul_leader.adapters.consul.port import (
    AgentService,
    ConsulDenied,
    ConsulError,
    ConsulPort,
    log_level,
)
from consul_leader.adapters.controller import Post
from consul_leader.adapters.publishing.labels import (
    SESSION_META_KEY,
    Role,
    alloc_targets,
    labelled,
    registration_body,
)
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader.publisher")

NOT_FOUND_LOG_EVERY = 30  # discovery rounds: say "waiting for Nomad" at once, then now and then
UNKNOWN_OTHERS = "(unknown: Consul's health answer leaves instances out)"


@dataclass(frozen=True)
class PublisherSettings:
    service_ids: tuple[str, ...]  # explicit targets; else those of the allocation
    alloc_id: str | None
    service_name: str
    primary_label: str
    replica_label: str | None
    timings: Timings


class _Outcome(enum.Enum):
    DONE = "done"  # Consul shows the role on this target
    ABSENT = "absent"  # the target is not registered: nothing to show, nothing to retry
    RETRY = "retry"  # not yet (lease not vouched for, health not readable): try again soon
    OTHER_PRIMARY = "other_primary"  # another instance is still a passing primary


@dataclass
class _Request:
    role: Role
    session: str | None
    generation: int
    valid_until: float | None = None
    hold_until: float | None = None  # the bounded wait for another primary ends then
    override: bool = False  # label primary even over another passing primary
    reported: set[str] = field(default_factory=set)  # events posted for this request


class Publisher:
    def __init__(self, settings: PublisherSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_write: Callable[[str], None] = lambda result: None,
                 spawn_watch: Callable[[str], None] = lambda target: None) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self._on_write = on_write
        self._spawn_watch = spawn_watch
        self.wake: Callable[[], None] = lambda: None
        self._cond = threading.Condition()
        # The initial replica role must be applied too: it clears stale labels.
        self._request = _Request(Role.REPLICA, None, generation=1)
        self._applied = 0  # generation Consul shows on every target
        self._dirty = True
        self._retry_at: float | None = None
        self._failures = 0
        self._targets: list[str] = list(settings.service_ids)
        self._announced = False
        # Targets written at least once since they (re)appeared: until then we do not know
        # that our token may write them, so nothing may be claimed on their behalf.
        self._verified: set[str] = set()
        self._missing_since: dict[str, float] = {}
        self._gone_reported: set[str] = set()
        self._discovery_due = 0.0
        self._discovery_rounds = 0
        self._hashes: dict[str, str | None] = {}
        self._watch_failures: dict[str, int] = {}
        self._stopping = False

    @property
    def enabled(self) -> bool:
        """Whether there is anything to publish on (explicit IDs or an allocation)."""
        return bool(self._settings.service_ids or self._settings.alloc_id)

    # -- instructions ---------------------------------------------------------------------

    def publish(self, role: Role, session: str | None, valid_until: float | None) -> None:
        with self._cond:
            self._request = _Request(role, session, self._request.generation + 1,
                                     valid_until=valid_until)
            self._dirty = True
        self.wake()

    def extend(self, valid_until: float | None) -> None:
        """The lease was renewed: the primary label may be written until `valid_until`."""
        with self._cond:
            self._request.valid_until = valid_until
            self._dirty = self._dirty or self._applied < self._request.generation
        self.wake()

    def hold_for_other_primary_until(self, deadline: float) -> None:
        with self._cond:
            self._request.hold_until = deadline
            self._dirty = True
        self.wake()

    def publish_over_other_primary(self) -> None:
        with self._cond:
            self._request.override = True
            self._dirty = True
        self.wake()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- what the composition root asks ---------------------------------------------------

    def targets(self) -> list[str]:
        with self._cond:
            return list(self._targets)

    def published(self, role: Role) -> bool:
        with self._cond:
            return self._request.role is role and self._applied >= self._request.generation

    def wait_published(self, role: Role, timeout: float) -> bool:
        deadline = self._clock() + timeout
        with self._cond:
            while not (self._request.role is role and self._applied >= self._request.generation):
                left = deadline - self._clock()
                if left <= 0 or self._stopping:
                    return False
                self._cond.wait(left)
            return True

    # -- the applier's step ---------------------------------------------------------------

    def step(self) -> float | None:
        with self._cond:
            if self._stopping:
                return None
        now = self._clock()
        if self._settings.service_ids:
            self._announce_explicit_targets()
        elif self._settings.alloc_id and now >= self._discovery_due:
            self._discover()
        self._report_gone(now)
        with self._cond:
            due = self._dirty or (self._retry_at is not None and now >= self._retry_at)
            request = self._request
        if due:
            self._apply(request)
        return self._next_due()

    def _next_due(self) -> float | None:
        with self._cond:
            due = [since + self._timings.target_grace
                   for target, since in self._missing_since.items()
                   if target not in self._gone_reported]
            if self._retry_at is not None:
                due.append(self._retry_at)
            if self._settings.alloc_id and not self._settings.service_ids:
                due.append(self._discovery_due)
            if self._dirty:
                due.append(self._clock())
            return min(due) if due else None

    def _apply(self, request: _Request) -> None:
        with self._cond:
            self._dirty, self._retry_at = False, None
        try:
            outcomes = [self._reconcile(target, request) for target in self.targets()]
        except ConsulError as exc:
            self._write_failed(request, exc)
            return
        self._failures = 0
        if all(o is _Outcome.DONE for o in outcomes) and (outcomes or not self.enabled):
            self._applied_fully(request)
        elif _Outcome.OTHER_PRIMARY in outcomes:
            self._retry_in(self._timings.other_primary_recheck)
        elif _Outcome.RETRY in outcomes:
            self._retry_in(self._timings.backoff(self._failures))
            self._failures += 1
        # Only ABSENT left: the target's watch says when it is back.

    def _applied_fully(self, request: _Request) -> None:
        with self._cond:
            if request.generation != self._request.generation:
                return  # superseded meanwhile: its outcome would be about an old request
            self._applied = request.generation
            self._cond.notify_all()
        event = Event.PRIMARY_PUBLISHED if request.role is Role.PRIMARY \
            else Event.REPLICA_PUBLISHED
        self._report_once(request, event, f"{request.role.value} role published",
                          Facts(session=request.session, targets=tuple(self.targets())))

    def _write_failed(self, request: _Request, exc: ConsulError) -> None:
        denied = isinstance(exc, ConsulDenied)
        self._on_write("denied" if denied else "error")
        log.log(log_level(exc), "publishing the role failed, retrying", extra={"error": str(exc)})
        self._retry_in(self._timings.retry_cap if denied else self._timings.backoff(self._failures))
        self._failures += 1
        if denied:
            self._report_once(request, Event.PUBLISH_REFUSED, f"Consul denied it: {exc.reason}",
                              Facts(session=request.session))

    def _retry_in(self, seconds: float) -> None:
        with self._cond:
            self._retry_at = self._clock() + seconds

    def _report_once(self, request: _Request, event: Event, reason: str, facts: Facts) -> None:
        with self._cond:
            if event.value in request.reported:
                return
            request.reported.add(event.value)
        self._post(event, reason, facts)

    # -- one target -----------------------------------------------------------------------

    def _reconcile(self, target: str, request: _Request) -> _Outcome:
        read = self._port.agent_service(target, timeout=self._timings.request_timeout)
        if read.service is None:
            with self._cond:
                self._missing_since.setdefault(target, self._clock())
                self._verified.discard(target)
            return _Outcome.ABSENT
        with self._cond:
            self._missing_since.pop(target, None)
            self._gone_reported.discard(target)
        service = read.service
        settings = self._settings
        tags = labelled(service.tags, request.role, settings.primary_label, settings.replica_label)
        meta = dict(service.meta)
        if request.session:
            meta[SESSION_META_KEY] = request.session
        else:
            meta.pop(SESSION_META_KEY, None)
        if tags == list(service.tags) and meta == dict(service.meta) and self._verified_(target):
            return _Outcome.DONE
        blocked = self._primary_blocked(service, request)
        if blocked is not None:
            return blocked
        self._port.service_register(registration_body(service.definition, tags, meta),
                                    timeout=self._timings.request_timeout)
        self._on_write("ok")
        if not self._verified_(target):
            # We may write it; can we also see who else is primary (see _other_primaries)?
            if self._health_hidden(service):
                return _Outcome.RETRY
            with self._cond:
                self._verified.add(target)
        log.info("labels written", extra={"service_id": target, "role": request.role.value,
                                          "tags": ",".join(tags)})
        return _Outcome.DONE

    def _primary_blocked(self, service: AgentService, request: _Request) -> _Outcome | None:
        """Why the primary label may not go on `service` now, if it may not."""
        if request.role is not Role.PRIMARY:
            return None
        now = self._clock()
        if request.valid_until is None or now >= request.valid_until:
            return _Outcome.RETRY  # never advertise primary on a lease we cannot vouch for
        adds_primary = self._settings.primary_label not in service.tags
        if not adds_primary or request.override:
            return None
        others = self._other_primaries(service)
        if not others:
            return None
        facts = Facts(session=request.session, others=others)
        self._report_once(request, Event.OTHER_PRIMARY_SEEN,
                          f"{', '.join(others)} still a passing primary", facts)
        if request.hold_until is not None and now >= request.hold_until:
            self._report_once(request, Event.OTHER_PRIMARY_WAIT_OVER,
                              f"{', '.join(others)} still a passing primary at the bound",
                              facts)
        return _Outcome.OTHER_PRIMARY

    def _other_primaries(self, service: AgentService) -> tuple[str, ...]:
        """Other instances Consul still lists as passing primaries.

        Normally the old leader took its label off before letting the key go. But when the
        key changed hands behind its back (deleted, say, while it could not hear its agent),
        it still looks primary until its role check expires. Publishing now would list two
        primaries, so the machine waits (bounded) until Consul no longer lists it.
        """
        health = self._port.health_service(service.name, timeout=self._timings.request_timeout)
        listed = {entry.service_id for entry in health.entries}
        if health.filtered or service.id not in listed:
            self._log_hidden(service.name)
            return (UNKNOWN_OTHERS,)
        mine = set(self.targets())
        return tuple(sorted(entry.service_id for entry in health.entries
                            if entry.passing and entry.tagged(self._settings.primary_label)
                            and entry.service_id not in mine))

    def _health_hidden(self, service: AgentService) -> bool:
        """Does Consul's health answer leave instances out (ACLs)? Then nobody could tell
        whether another one is primary, so we may not compete."""
        health = self._port.health_service(service.name, timeout=self._timings.request_timeout)
        if health.filtered or service.id not in {e.service_id for e in health.entries}:
            self._log_hidden(service.name)
            return True
        return False

    def _log_hidden(self, name: str) -> None:
        log.error("cannot check that no other instance is primary: Consul's answer leaves "
                  "instances out; the token may lack permission 'node:read' on \"\" "
                  f"(every node) or permission 'service:read' on \"{name}\"")

    def _verified_(self, target: str) -> bool:
        with self._cond:
            return target in self._verified

    def _report_gone(self, now: float) -> None:
        with self._cond:
            gone = [target for target, since in self._missing_since.items()
                    if now - since >= self._timings.target_grace
                    and target not in self._gone_reported]
            self._gone_reported.update(gone)
            session = self._request.session
        for target in gone:
            self._post(Event.TARGET_GONE, f"service {target} is no longer registered",
                       Facts(session=session, targets=(target,)))

    # -- targets --------------------------------------------------------------------------

    def _announce_explicit_targets(self) -> None:
        with self._cond:
            if self._announced:
                return
            self._announced = True
        self._adopted(self.targets())

    def _discover(self) -> None:
        prefix = f"_nomad-task-{self._settings.alloc_id}-"
        try:
            read = self._port.agent_services(timeout=self._timings.request_timeout)
        except ConsulError as exc:
            log.log(log_level(exc), "service discovery failed", extra={"error": str(exc)})
            self._discovery_due = self._clock() + self._timings.discovery_interval
            return
        found = alloc_targets(read.services, prefix, self._settings.service_name)
        with self._cond:
            new = [target for target in found if target not in self._targets]
            self._targets.extend(new)
            known = bool(self._targets)
        if new:
            log.info("target services found", extra={"service_ids": ",".join(new)})
            self._adopted(new)
        elif not known and self._discovery_rounds % NOT_FOUND_LOG_EVERY == 0:
            self._log_nothing_found(read.filtered)
        self._discovery_rounds += 1
        interval = (self._timings.rediscovery_interval if known
                    else self._timings.discovery_interval)
        self._discovery_due = self._clock() + interval

    def _adopted(self, new: list[str]) -> None:
        for target in new:
            self._spawn_watch(target)
        with self._cond:
            self._dirty = True
            session = self._request.session
        self._post(Event.TARGETS_FOUND, f"target services: {', '.join(self.targets())}",
                   Facts(session=session, targets=tuple(self.targets())))

    def _log_nothing_found(self, filtered: bool) -> None:
        alloc = self._settings.alloc_id
        if filtered:
            log.error(
                f"no service of allocation {alloc} is visible: the token may lack permission "
                f"'service:read' on \"{self._settings.service_name}\" (Consul filtered the "
                "answer by ACLs)")
        else:
            log.warning(f"waiting for Nomad to register the services of allocation {alloc}")

    # -- a target's watch -----------------------------------------------------------------

    def watch_step(self, target: str) -> float | None:
        """One blocking read of `target` on its content hash; a change wakes the applier."""
        with self._cond:
            if self._stopping:
                return None
            seen = target in self._hashes
            content_hash = self._hashes.get(target)
        started, timings = self._clock(), self._timings
        try:
            read = self._port.agent_service(
                target, hash=content_hash, wait=timings.watch_wait_text,
                timeout=timings.watch_timeout if content_hash else timings.request_timeout)
        except ConsulError as exc:
            failures = self._watch_failures.get(target, 0) + 1
            self._watch_failures[target] = failures
            log.debug("service watch failed", extra={"service_id": target, "error": str(exc)})
            return self._clock() + timings.backoff(failures)
        self._watch_failures[target] = 0
        new_hash = read.content_hash if read.service is not None else None
        if new_hash != content_hash:
            with self._cond:
                if seen and (content_hash is None or new_hash is None):
                    self._verified.discard(target)  # (re)appeared: write it again
                self._hashes[target] = new_hash
                self._dirty = True
            self.wake()
        if read.service is None:
            return self._clock() + timings.discovery_interval  # gone: look again shortly
        return started + timings.min_watch_interval
