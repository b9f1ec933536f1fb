"""The machine's side effects (the fsm.machine.Effects port): the one hub the machine drives.

Every effect reads the facts of its transition and hands work to an adapter; none blocks the
controller and none asks an adapter what it saw (the facts came with the event). What each
state publishes:

* **Leader**: on entering, the leader file and the promote hook (they follow the lock: they
  run as soon as the lock is ours, before the label is published), then the primary role is
  published once Consul lists no other passing primary, or when the bounded wait for one is
  over (counted, and logged as an error naming the other instance).
* **Any other state**: the replica role (the replica label when one is set), no leader file;
  leaving Leader removes the leader file and runs the demote hook as the label goes.
* **NoSession**: the session is given up (key released with its value, session destroyed).
  With the health gate on, no new session is prepared or created while the application is
  not known healthy (`application_critical` until `application_healthy`).

Switchover (issue 12): `switchover_requested` moves the leader to Follower as any step-down
does (leader file removed, demote hook, replica role); the hold-off starts at once, and only
once Consul shows the replica role is the key handed over (hint written, key released), so the
next leader never has to wait for our primary label to go.

The role checks vouch for what Consul shows: while not leading, only once Consul shows the
replica role (so a primary label on its way out is never vouched for); while leading, only
when the lock was just confirmed ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consul_leader.adapters.publishing.labels import Role
from consul_leader.fsm.machine import Transition
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader")


# -- what the hub drives (each implemented by one adapter) ------------------------------------


class SessionDriver(Protocol):
    def create(self, bound_checks: tuple[str, ...] = ()) -> None: ...
    def cancel_create(self) -> None: ...
    def give_up(self, session: str | None) -> None: ...


class AcquireDriver(Protocol):
    def campaign(self, session: str, after: float = 0.0) -> None: ...
    def stand_down(self) -> None: ...
    def keep_value(self, session: str, observation: KeyObservation | None) -> None: ...
    def hold_off(self, until: float) -> None: ...
    def hand_over(self, session: str, target: str | None, hold_off: float) -> None: ...


class WatchDriver(Protocol):
    def follow(self, session: str | None) -> None: ...
    def confirm(self, session: str, max_age: float) -> None: ...


class PublishDriver(Protocol):
    def publish(self, role: Role, session: str | None, valid_until: float | None,
                fencing_token: int | None = None) -> None: ...
    def extend(self, valid_until: float | None) -> None: ...
    def hold_for_other_primary_until(self, deadline: float) -> None: ...
    def publish_over_other_primary(self) -> None: ...
    def evict_stale_primaries(self, instances: tuple[tuple[str, str], ...]) -> None: ...


class ChecksDriver(Protocol):
    @property
    def enabled(self) -> bool: ...
    def set_targets(self, targets: Sequence[str]) -> None: ...
    def prepare_lease_check(self) -> None: ...
    def pass_round(self, *, lease: bool, roles: bool, valid_until: float | None,
                   note: str = ...) -> None: ...


class LeaderFileDriver(Protocol):
    def write(self, content: Mapping[str, object]) -> None: ...
    def remove(self) -> None: ...


class HookDriver(Protocol):
    def submit(self, name: str, command: str | None, env: Mapping[str, str]) -> None: ...


class MetricsDriver(Protocol):
    def transition(self, source: str, dest: str, event: str) -> None: ...
    def refused(self, state: str, event: str) -> None: ...
    def fencing_token(self, value: int) -> None: ...
    def published_over_other_primary(self) -> None: ...
    def health_gate(self, state: str) -> None: ...


class GateDriver(Protocol):
    """The health gate (CONSUL_LEADER_HEALTH_GATE)."""

    def set_targets(self, targets: Sequence[str]) -> None: ...
    def recheck(self) -> None: ...


@dataclass(frozen=True)
class Drivers:
    keeper: SessionDriver
    acquirer: AcquireDriver
    watcher: WatchDriver
    publisher: PublishDriver
    checks: ChecksDriver
    leader_file: LeaderFileDriver
    hooks: HookDriver
    metrics: MetricsDriver
    gate: GateDriver | None = None  # with CONSUL_LEADER_HEALTH_GATE only


@dataclass(frozen=True)
class HubSettings:
    key: str
    timings: Timings
    on_promote: str | None = None
    on_demote: str | None = None


# What /status shows of the health gate.
GATE_OFF, GATE_WAITING, GATE_HEALTHY, GATE_CRITICAL = "off", "waiting", "healthy", "critical"


class RoleEffects:
    """Call every method from the controller thread only (the machine's effects)."""

    def __init__(self, settings: HubSettings, drivers: Drivers, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._timings = settings.timings
        self._d = drivers
        self._clock = clock
        self._wall_clock = wall_clock
        self._valid_until: float | None = None
        self._replica_shown = False  # Consul shows the replica role since the last change
        self._other_primary_deadline: float | None = None
        self._others: tuple[str, ...] = ()
        self.fencing_token: int | None = None
        self.leader_since: float | None = None
        self.published = False  # Consul shows the primary role (Leader only)
        self._handover: tuple[str, str | None, float] | None = None  # once replica shows
        # The health gate: no session is created while the application is not known healthy.
        self.application_health = GATE_OFF if drivers.gate is None else GATE_WAITING
        self.application_reason = ""

    # -- bookkeeping effects --------------------------------------------------------------

    def transitioned(self, t: Transition) -> None:
        self._d.metrics.transition(t.source.value, t.dest.value, t.event.value)
        if t.internal:
            log.debug("event", extra=_fields(t))
            return
        level = logging.WARNING if State.LEADER in (t.source, t.dest) else logging.INFO
        log.log(level, "transition", extra=_fields(t))

    def refused(self, state: State, event: Event, reason: str) -> None:
        self._d.metrics.refused(state.value, event.value)
        log.debug("event refused", extra={"state": state.value, "event": event.value,
                                          "reason": reason})

    # -- entry and exit -------------------------------------------------------------------

    def enter_no_session(self, t: Transition) -> None:
        if t.event is Event.APPLICATION_CRITICAL:
            self._application(GATE_CRITICAL, t.reason)
        self._valid_until, self._replica_shown, self.published = None, False, False
        self._handover = None
        self._d.acquirer.stand_down()
        self._d.watcher.follow(None)
        self._d.publisher.publish(Role.REPLICA, None, None)
        if t.event is not Event.SHUTDOWN:
            self._d.keeper.give_up(t.facts.session)
        # On shutdown the session is kept until Consul shows the replica role: the composition
        # root releases the key only then (DESIGN §3), so the next leader finds no primary
        # label left to wait for.

    def enter_candidate(self, t: Transition) -> None:
        session = self._session(t)
        self._handover = None
        self._valid_until = t.facts.valid_until or self._valid_until
        self._d.publisher.publish(Role.REPLICA, session, self._valid_until)
        self._d.watcher.follow(session)
        self._d.acquirer.campaign(session)

    def enter_follower(self, t: Transition) -> None:
        session = self._session(t)
        self._d.acquirer.stand_down()
        self._d.publisher.publish(Role.REPLICA, session, self._valid_until)
        self._d.watcher.follow(session)
        if t.event is Event.SWITCHOVER_REQUESTED:
            self._start_switchover(t, session)

    def enter_leader(self, t: Transition) -> None:
        session = self._session(t)
        self._handover = None
        self.fencing_token = t.facts.fencing_token
        self.leader_since = self._wall_clock()
        self.published, self._other_primary_deadline = False, None
        if self.fencing_token is not None:
            self._d.metrics.fencing_token(self.fencing_token)
        self._d.acquirer.stand_down()
        self._d.publisher.publish(Role.PRIMARY, session, self._valid_until, self.fencing_token)
        self._d.leader_file.write({
            "session": session, "key": self._settings.key, "fencing_token": self.fencing_token,
            "since": self.leader_since,
        })
        self._d.hooks.submit("promote", self._settings.on_promote,
                             self._hook_env("primary", session))

    def exit_leader(self, t: Transition) -> None:
        self._d.leader_file.remove()
        self.leader_since, self.published, self._replica_shown = None, False, False
        self._d.hooks.submit("demote", self._settings.on_demote,
                             self._hook_env("replica", t.facts.session))

    # -- reactions ------------------------------------------------------------------------

    def retry_acquire(self, t: Transition) -> None:
        self._d.acquirer.campaign(self._session(t), after=t.facts.retry_in or 0.0)

    def vouch_replica(self, t: Transition) -> None:
        self._renewed(t)
        self._d.checks.pass_round(lease=True, roles=self._replica_shown,
                                  valid_until=self._valid_until)

    def vouch_lease(self, t: Transition) -> None:
        self._renewed(t)
        self._d.checks.pass_round(lease=True, roles=False, valid_until=self._valid_until)
        # The role checks wait until the lock is confirmed ours (vouch_primary).
        self._d.watcher.confirm(self._session(t), max_age=self._timings.ttl)

    def vouch_primary(self, t: Transition) -> None:
        self._d.checks.pass_round(lease=False, roles=True, valid_until=self._valid_until,
                                  note="lock confirmed")
        self._d.acquirer.keep_value(self._session(t), t.facts.observation)

    def prepare_session(self, t: Transition) -> None:
        if t.event is Event.REPLICA_PUBLISHED:
            self._replica_shown = True
        if t.event is Event.APPLICATION_HEALTHY:
            self._application(GATE_HEALTHY, t.reason)
            if not self._replica_shown:
                return  # replica_published prepares, once Consul shows the replica role
        if not self._may_compete():
            return  # application_healthy prepares
        if self._d.checks.enabled:
            self._d.checks.prepare_lease_check()
        else:
            self._d.keeper.create()

    def create_session(self, t: Transition) -> None:
        if self._may_compete():  # else the application went critical since the preparation
            self._d.keeper.create(t.facts.checks)

    def await_healthy(self, t: Transition) -> None:
        self._application(GATE_CRITICAL, t.reason)
        self._d.keeper.cancel_create()  # a session created meanwhile is given up at once
        if self._d.gate is not None:
            # Consul may refuse a session on the alias check while the gate sees the
            # application healthy (the alias lags node maintenance): ask it again, later.
            self._d.gate.recheck()

    def adopt_targets(self, t: Transition) -> None:
        self._d.checks.set_targets(t.facts.targets)
        if self._d.gate is not None:
            self._d.gate.set_targets(t.facts.targets)

    def mark_published(self, t: Transition) -> None:
        if t.event is Event.PRIMARY_PUBLISHED:
            self.published = True
            return
        self._replica_shown = True
        if self._handover is not None:
            self._d.acquirer.hand_over(*self._handover)
            self._handover = None

    def await_other_primary(self, t: Transition) -> None:
        self._others = t.facts.others
        if self._other_primary_deadline is None:
            self._other_primary_deadline = self._clock() + self._timings.other_primary_wait
            self._d.publisher.hold_for_other_primary_until(self._other_primary_deadline)
        log.info("waiting for another passing primary to go before publishing ours",
                 extra={"others": ",".join(self._others),
                        "wait": round(self._timings.other_primary_wait, 3)})

    def publish_over_other_primary(self, t: Transition) -> None:
        if t.facts.stale_primaries:
            # Their sessions are gone: they lead nothing, Consul just cannot unlist them.
            self._d.publisher.evict_stale_primaries(t.facts.stale_primaries)
        others = ",".join(t.facts.others or self._others)
        self._d.metrics.published_over_other_primary()
        log.error(f"another instance is still a passing primary after waiting "
                  f"{self._timings.other_primary_wait:g}s for its role check to expire; "
                  f"publishing ours anyway", extra={"others": others})
        self._d.publisher.publish_over_other_primary()

    def evict_stale_primaries(self, t: Transition) -> None:
        # Their sessions are gone: they lead nothing, Consul just cannot unlist them.
        self._d.publisher.evict_stale_primaries(t.facts.stale_primaries)

    # -- helpers --------------------------------------------------------------------------

    def _start_switchover(self, t: Transition, session: str) -> None:
        hold_off = t.facts.hold_off or 0.0
        self._d.acquirer.hold_off(self._clock() + hold_off)
        self._handover = (session, t.facts.target, hold_off)
        log.warning("switchover: handing over once the replica role shows",
                    extra={"to": t.facts.target or "", "hold_off": hold_off})

    def _may_compete(self) -> bool:
        return self.application_health in (GATE_OFF, GATE_HEALTHY)

    def _application(self, health: str, reason: str) -> None:
        if self._d.gate is None:
            return
        self.application_health, self.application_reason = health, reason
        self._d.metrics.health_gate(health)

    def _renewed(self, t: Transition) -> None:
        self._valid_until = t.facts.valid_until
        self._d.publisher.extend(self._valid_until)

    @staticmethod
    def _session(t: Transition) -> str:
        """The session of a transition taken with one (every state but NoSession)."""
        if t.facts.session is None:
            raise ValueError(f"{t.event} reached {t.dest} without a session")
        return t.facts.session

    def _hook_env(self, role: str, session: str | None) -> dict[str, str]:
        return {
            "CONSUL_LEADER_ROLE": role,
            "CONSUL_LEADER_SESSION": session or "",
            "CONSUL_LEADER_FENCING_TOKEN": "" if self.fencing_token is None
            else str(self.fencing_token),
            "CONSUL_LEADER_LOCK_KEY": self._settings.key,
        }


def _fields(t: Transition) -> dict[str, str]:
    return {"from": t.source.value, "to": t.dest.value, "event": t.event.value,
            "reason": t.reason}
