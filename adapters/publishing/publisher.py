"""The publisher: makes Consul show the role the machine asked for, and reports what it sees.

The machine says which role to publish (`publish`); the step makes the agent's view match it
on every target service and posts the outcome as events: `targets_found`, `replica_published`
/ `primary_published` (once per request, when Consul shows it on every target),
`publish_refused` (Consul denied a write), `target_gone` (a target deregistered for longer than
its grace), and, before the primary label goes on, `other_primary_seen` while another instance
is still a passing primary, `stale_primary_seen` when, past a short grace, Consul no longer
has the session named in that instance's Meta, and `other_primary_wait_over` if it still is
at the deadline the machine set (`hold_for_other_primary_until`). It evicts from the catalog
only the instances the machine names (`evict_stale_primaries`). The publisher never decides
anything about leadership: it only applies what it is asked, never labels primary over
another passing primary unless told to (`publish_over_other_primary`), and never writes the
primary label on a lease that has run out (`extend` keeps it informed).

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
    HealthEntry,
    log_level,
)
from consul_leader.adapters.controller import Post
from consul_leader.adapters.durations import format_duration
from consul_leader.adapters.publishing.labels import (
    Owned,
    Role,
    alloc_targets,
    eviction_candidates,
    labelled,
    owned_service_id,
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
    # Registration mode: who owns the instances we register (the allocation); None is the
    # seed-compatible mode, labels on the targets themselves.
    owner: str | None = None
    published_name: str | None = None  # the name of our instances (else the target's)
    role_check: bool = True  # our instances carry the role TTL check (health checks on)
    priority: int | None = None  # published in our instances' Meta for peers (issue 12)


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
    fencing_token: int | None = None
    hold_until: float | None = None  # the bounded wait for another primary ends then
    others_seen_at: float | None = None  # when another passing primary was first seen
    override: bool = False  # label primary even over another passing primary
    reported: set[str] = field(default_factory=set)  # events posted for this request


class Publisher:
    def __init__(self, settings: PublisherSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_write: Callable[[str], None] = lambda result: None,
                 spawn_watch: Callable[[str], None] = lambda target: None,
                 on_evicted: Callable[[], None] = lambda: None) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._port = port
        self._post = post
        self._clock = clock
        self._on_write = on_write
        self._spawn_watch = spawn_watch
        self._on_evicted = on_evicted
        self._evictions: list[tuple[str, str]] = []  # (node, service ID) still to deregister
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

    def publish(self, role: Role, session: str | None, valid_until: float | None,
                fencing_token: int | None = None) -> None:
        with self._cond:
            self._request = _Request(role, session, self._request.generation + 1,
                                     valid_until=valid_until, fencing_token=fencing_token)
            if role is not Role.PRIMARY:
                # Evicting is a leader's decision: a failed one is not retried after it.
                self._evictions.clear()
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

    def evict_stale_primaries(self, instances: tuple[tuple[str, str], ...]) -> None:
        """Deregister these (node, service ID) from the catalog, before publishing next."""
        with self._cond:
            self._evictions.extend(i for i in instances if i not in self._evictions)
            self._dirty = True
        self.wake()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def withdraw(self, timeout: float) -> None:
        """Clean shutdown: deregister the instances we own (best effort; a dead sidecar's are
        reaped by Consul instead)."""
        owner = self._settings.owner
        if owner is None:
            return
        for target in self.targets():
            try:
                self._port.service_deregister(owned_service_id(owner, target), timeout=timeout)
            except ConsulError as exc:
                log.warning("could not deregister our instance", extra={"error": str(exc)})

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
        self._evict_pending()
        try:
            outcomes = [self._reconcile(target, request) for target in self.targets()]
        except ConsulError as exc:
            self._write_failed(request, exc)
            return
        self._failures = 0
        if all(o is _Outcome.DONE for o in outcomes) and (outcomes or not self.enabled):
            self._applied_fully(request)
            return
        if request.role is Role.REPLICA and all(
                o in (_Outcome.DONE, _Outcome.ABSENT) for o in outcomes):
            # No primary of ours anywhere (a gone target's instance was relabelled too), which
            # is what a clean shutdown waits for; not yet a reason to compete (targets gone).
            self._mark_applied(request)
        if _Outcome.OTHER_PRIMARY in outcomes:
            self._retry_in(self._timings.other_primary_recheck)
        elif _Outcome.RETRY in outcomes:
            self._retry_in(self._timings.backoff(self._failures))
            self._failures += 1
        # Only ABSENT left: the target's watch says when it is back.

    def _applied_fully(self, request: _Request) -> None:
        if not self._mark_applied(request):
            return  # superseded meanwhile: its outcome would be about an old request
        event = Event.PRIMARY_PUBLISHED if request.role is Role.PRIMARY \
            else Event.REPLICA_PUBLISHED
        self._report_once(request, event, f"{request.role.value} role published",
                          Facts(session=request.session, targets=tuple(self.targets())))

    def _mark_applied(self, request: _Request) -> bool:
        with self._cond:
            if request.generation != self._request.generation:
                return False
            self._applied = request.generation
            self._cond.notify_all()
            return True

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
            if self._settings.owner is not None:
                self._relabel_orphan(target, self._settings.owner, request)
            return _Outcome.ABSENT
        with self._cond:
            self._missing_since.pop(target, None)
            self._gone_reported.discard(target)
        if self._settings.owner is None:
            return self._label_target(read.service, request)
        return self._publish_owned(read.service, self._settings.owner, request)

    def _label_target(self, service: AgentService, request: _Request) -> _Outcome:
        """Seed-compatible mode: the role label on the target itself; its Meta and checks are
        left alone (Nomad owns them and puts its own back at every sync)."""
        settings = self._settings
        tags = labelled(service.tags, request.role, settings.primary_label, settings.replica_label)
        if tags == list(service.tags) and self._verified_(service.id):
            return _Outcome.DONE
        adds_primary = settings.primary_label not in service.tags
        blocked = self._primary_blocked(service.name, service.id, adds_primary, request)
        if blocked is not None:
            return blocked
        self._port.service_register(registration_body(service.definition, tags,
                                                      dict(service.meta)),
                                    timeout=self._timings.request_timeout)
        return self._written(service.id, service.name, service.id, request, tags)

    def _publish_owned(self, target: AgentService, owner: str, request: _Request) -> _Outcome:
        """Registration mode: our own instance for the target, with the target's address, the
        role label and the target's tags, our Meta, an alias check and the role TTL check."""
        settings = self._settings
        owned = self._owned(target, request)
        ours_id = owned_service_id(owner, target.id)
        ours = self._port.agent_service(ours_id, timeout=self._timings.request_timeout).service
        if ours is None:
            with self._cond:
                self._verified.discard(target.id)
        elif owned.shown_by(target, ours) and self._verified_(target.id):
            return _Outcome.DONE
        adds_primary = ours is None or settings.primary_label not in ours.tags
        blocked = self._primary_blocked(owned.name, ours_id, adds_primary, request)
        if blocked is not None:
            return blocked
        body = owned.registration(target)
        self._port.service_register(body, timeout=self._timings.request_timeout)
        return self._written(target.id, owned.name, ours_id, request, body["Tags"])

    def _relabel_orphan(self, target: str, owner: str, request: _Request) -> None:
        """The target is gone (for now): our instance is not offered (its alias check is
        critical), but it must not keep a role we no longer hold, or it would be a stale
        primary the moment the target comes back. Relabel it from its own definition (its
        checks are kept)."""
        if request.role is Role.PRIMARY:
            return  # only ever to drop a role: the primary label goes on through its gates
        ours = self._port.agent_service(owned_service_id(owner, target),
                                        timeout=self._timings.request_timeout).service
        if ours is None:
            return
        settings = self._settings
        tags = labelled(ours.tags, request.role, settings.primary_label, settings.replica_label)
        if tags == list(ours.tags):
            return
        meta = self._owned(ours, request).meta(AgentService(target, ours.name))
        self._port.service_register(registration_body(ours.definition, tags, meta),
                                    timeout=self._timings.request_timeout)
        self._on_write("ok")

    def _owned(self, target: AgentService, request: _Request) -> Owned:
        settings = self._settings
        assert settings.owner is not None
        return Owned(owner=settings.owner, name=settings.published_name or target.name,
                     role=request.role, labels=(settings.primary_label, settings.replica_label),
                     session=request.session, alloc_id=settings.alloc_id,
                     fencing_token=request.fencing_token,
                     role_ttl=format_duration(self._timings.role_check_ttl)
                     if settings.role_check else None, priority=settings.priority)

    def _written(self, target: str, name: str, listed_as: str, request: _Request,
                 tags: list[str]) -> _Outcome:
        """A write went through; the first one also checks that Consul's health answer for
        `name` is complete (lists `listed_as`), else nobody could tell who else is primary."""
        self._on_write("ok")
        if not self._verified_(target):
            if self._health_hidden(name, listed_as):
                return _Outcome.RETRY
            with self._cond:
                self._verified.add(target)
        log.info("role written", extra={"service_id": listed_as, "role": request.role.value,
                                        "tags": ",".join(tags)})
        return _Outcome.DONE

    def _primary_blocked(self, name: str, listed_as: str, adds_primary: bool,
                         request: _Request) -> _Outcome | None:
        """Why the primary label may not go on now, if it may not."""
        if request.role is not Role.PRIMARY:
            return None
        now = self._clock()
        if request.valid_until is None or now >= request.valid_until:
            return _Outcome.RETRY  # never advertise primary on a lease we cannot vouch for
        if not adds_primary or request.override:
            return None
        entries = self._other_primaries(name, listed_as)
        if entries == ():
            return None
        others = (UNKNOWN_OTHERS,) if entries is None else tuple(e.service_id for e in entries)
        facts = Facts(session=request.session, others=others)
        self._report_once(request, Event.OTHER_PRIMARY_SEEN,
                          f"{', '.join(others)} still a passing primary", facts)
        with self._cond:
            if request.others_seen_at is None:
                request.others_seen_at = now
        if entries and now >= request.others_seen_at + self._timings.stale_primary_grace \
                and Event.STALE_PRIMARY_SEEN.value not in request.reported:
            self._report_stale(request, entries, others)
        if request.hold_until is not None and now >= request.hold_until \
                and Event.OTHER_PRIMARY_WAIT_OVER.value not in request.reported:
            stale = self._provably_stale(entries or ())
            self._report_once(request, Event.OTHER_PRIMARY_WAIT_OVER,
                              f"{', '.join(others)} still a passing primary at the bound",
                              Facts(session=request.session, others=others,
                                    stale_primaries=stale))
        return _Outcome.OTHER_PRIMARY

    def _other_primaries(self, name: str, listed_as: str) -> tuple[HealthEntry, ...] | None:
        """Other instances Consul still lists as passing primaries under `name`.

        Normally the old leader took its label off before letting the key go. But when the
        key changed hands behind its back (deleted, say, while it could not hear its agent),
        it still looks primary until its role check expires. Publishing now would list two
        primaries, so the machine waits (bounded) until Consul no longer lists it.
        """
        health = self._port.health_service(name, timeout=self._timings.request_timeout)
        if health.filtered or listed_as not in {entry.service_id for entry in health.entries}:
            self._log_hidden(name)
            return None  # unknown: the answer leaves instances out
        mine = set(self._our_ids())
        return tuple(sorted((entry for entry in health.entries
                             if entry.passing and entry.tagged(self._settings.primary_label)
                             and entry.service_id not in mine),
                            key=lambda entry: entry.service_id))

    # -- stale primaries -----------------------------------------------------------------

    def _report_stale(self, request: _Request, entries: tuple[HealthEntry, ...],
                      others: tuple[str, ...]) -> None:
        """Once per request, past the grace: the other primaries whose session is gone, if
        any. Those with a live session are left to the bounded wait."""
        with self._cond:
            request.reported.add(Event.STALE_PRIMARY_SEEN.value)
        stale = self._provably_stale(entries)
        if stale:
            self._post(Event.STALE_PRIMARY_SEEN,
                       f"{', '.join(sid for _, sid in stale)} listed as a passing primary, "
                       "its session gone",
                       Facts(session=request.session, others=others, stale_primaries=stale))

    def _provably_stale(self, entries: tuple[HealthEntry, ...]) -> tuple[tuple[str, str], ...]:
        """(node, service ID) of the other primaries whose session Consul no longer has."""
        stale = []
        for candidate in eviction_candidates(entries):
            try:
                gone = self._port.session_gone(candidate.session,
                                               timeout=self._timings.request_timeout)
            except ConsulError as exc:
                log.log(log_level(exc), "could not tell whether another primary's session "
                        "still exists; leaving it listed", extra={
                            "instance": candidate.service_id, "error": str(exc)})
                continue
            if gone:
                stale.append((candidate.node, candidate.service_id))
        return tuple(stale)

    def _evict_pending(self) -> None:
        """Deregister from the catalog the stale primaries the machine told us to."""
        with self._cond:
            pending, self._evictions = self._evictions, []
        for node, service_id in pending:
            if not self._evict(node, service_id):
                with self._cond:
                    self._evictions.append((node, service_id))
        with self._cond:
            if self._evictions:
                self._retry_at = self._clock() + self._timings.backoff(self._failures)

    def _evict(self, node: str, service_id: str) -> bool:
        """One catalog deregistration; False when worth retrying."""
        where = {"instance": service_id, "node": node}
        try:
            self._port.catalog_deregister(node, service_id,
                                          timeout=self._timings.request_timeout)
        except ConsulDenied as exc:
            log.error("Consul denied evicting a stale primary from the catalog; the token "
                      f"needs 'service:write' on its name (or 'node:write' on \"{node}\")",
                      extra={**where, "error": exc.reason})
            return True
        except ConsulError as exc:
            log.log(log_level(exc), "evicting a stale primary failed, retrying",
                    extra={**where, "error": str(exc)})
            return False
        self._on_evicted()
        log.error("evicted a stale primary from the catalog: Consul still listed it as a "
                  "passing primary, but the session in its Meta no longer exists", extra=where)
        return True

    def _our_ids(self) -> list[str]:
        targets, owner = self.targets(), self._settings.owner
        return targets + ([owned_service_id(owner, t) for t in targets] if owner else [])

    def _health_hidden(self, name: str, listed_as: str) -> bool:
        """Does Consul's health answer leave instances out (ACLs)? Then nobody could tell
        whether another one is primary, so we may not compete."""
        health = self._port.health_service(name, timeout=self._timings.request_timeout)
        if health.filtered or listed_as not in {e.service_id for e in health.entries}:
            self._log_hidden(name)
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
        owner = self._settings.owner
        for target in new:
            self._spawn_watch(target)
            if owner is not None:
                self._spawn_watch(owned_service_id(owner, target))  # someone may remove it
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
        """One blocking read of `target` (or of our instance for it) on its content hash; a
        change wakes the applier."""
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
