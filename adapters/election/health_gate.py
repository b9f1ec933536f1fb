"""The health gate (CONSUL_LEADER_HEALTH_GATE): whether the application may lead.

The application is healthy when no check Consul lists on a target instance is critical: the
target's own checks, `_service_maintenance:<id>`, and its node's checks (`_node_maintenance`,
serfHealth). That is the verdict of the alias check on our instance, which the session is bound
to, so Consul itself ends a critical leader's session and refuses a critical candidate one.
The gate watches anyway, because Consul's alias lags node maintenance (it is node-level and
notifies no alias, addendum §15.4), and because a candidate refused a session must learn when
to try again without polling session/create.

It watches `/v1/health/service/<target name>` with blocking queries (the entries carry node
checks too, and our own instance with its alias check when it has the target's name), one
watch per name, and reports its verdict as an event when it changes:
`application_critical` or `application_healthy`. It decides nothing. When the machine asks
(`recheck`: Consul refused a session on the alias check), it reports a healthy verdict once
more, after a backoff that grows to the retry cap, since the alias may catch up later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consul_leader.adapters.consul.port import ConsulError, ConsulPort, HealthRead, log_level
from consul_leader.adapters.controller import Post
from consul_leader.fsm.facts import Facts
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader.health_gate")


@dataclass(frozen=True)
class GateSettings:
    timings: Timings
    # Our alias check on a target is `<prefix><target ID>`: listed critical (it may lag the
    # target's checks), it keeps the verdict critical, since Consul refuses a session on it.
    alias_check_prefix: str = ""


@dataclass(frozen=True)
class Verdict:
    """One target's health: `critical` names what fails ("" when healthy)."""

    critical: str = ""
    check_id: str | None = None

    @property
    def healthy(self) -> bool:
        return not self.critical


def verdict_of(read: HealthRead, target: str, alias_check: str = "") -> Verdict:
    """The target's instance in a health answer: critical if any of its checks is, or if it
    is not listed (deregistered, or hidden by ACLs: the gate fails closed). Our `alias_check`
    on it, when the answer lists it critical, keeps it critical: Consul's alias sees node
    checks only at its next notification or refresh (up to a minute after node maintenance
    ended), and until then it refuses a session bound to it."""
    entry = next((e for e in read.entries if e.service_id == target), None)
    if entry is None:
        hidden = " (the answer was filtered by ACLs)" if read.filtered else ""
        return Verdict(f"{target} is not listed by Consul{hidden}")
    failing = entry.critical_checks
    if failing:
        return Verdict(f"{target}: {', '.join(failing)} critical", failing[0])
    if alias_check and any(alias_check in e.critical_checks for e in read.entries):
        return Verdict(f"{alias_check} still critical (Consul re-evaluates it later)",
                       alias_check)
    return Verdict()


class HealthGate:
    """`step()` from one worker (names, rechecks); `watch_step(name)` from one worker per
    service name; the other methods from any thread."""

    def __init__(self, settings: GateSettings, port: ConsulPort, post: Post, *,
                 clock: Callable[[], float] = time.monotonic,
                 spawn_watch: Callable[[str], None] = lambda name: None) -> None:
        self._timings = settings.timings
        self._alias_prefix = settings.alias_check_prefix
        self._port = port
        self._post = post
        self._clock = clock
        self._spawn_watch = spawn_watch
        self.wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] = ()
        self._names: dict[str, str] = {}  # target ID -> its service name
        self._watched: set[str] = set()
        self._indexes: dict[str, int] = {}
        self._verdicts: dict[str, Verdict] = {}
        self._reported: bool | None = None  # the last verdict posted (None: none yet)
        self._recheck_at: float | None = None
        self._rechecks = 0
        self._resolve_at: float | None = None
        self._stopping = False

    # -- instructions ---------------------------------------------------------------------

    def set_targets(self, targets: Sequence[str]) -> None:
        with self._lock:
            self._targets = tuple(targets)
            self._resolve_at = self._clock()
        self.wake()

    def recheck(self) -> None:
        """Consul refused a session on the alias check: report a healthy verdict again
        later (a critical one is reported when it changes)."""
        with self._lock:
            self._recheck_at = self._clock() + self._timings.backoff(self._rechecks)
            self._rechecks += 1
        self.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True

    # -- the main step: names of new targets, rechecks --------------------------------------

    def step(self) -> float | None:
        with self._lock:
            if self._stopping:
                return None
            resolve = self._resolve_at is not None and self._clock() >= self._resolve_at
        if resolve:
            self._resolve_names()
        self._report()
        with self._lock:
            due = [at for at in (self._resolve_at, self._recheck_at) if at is not None]
            return min(due) if due else None

    def _resolve_names(self) -> None:
        with self._lock:
            missing = [t for t in self._targets if t not in self._names]
            self._resolve_at = None
        for target in missing:
            try:
                read = self._port.agent_service(target, timeout=self._timings.request_timeout)
            except ConsulError as exc:
                log.log(log_level(exc), "cannot read a target service", extra={
                    "service_id": target, "error": str(exc)})
                read = None
            if read is None or read.service is None:
                with self._lock:  # try again soon (the publisher reports a target gone)
                    self._resolve_at = self._clock() + self._timings.discovery_interval
                continue
            self._adopt_name(target, read.service.name)

    def _adopt_name(self, target: str, name: str) -> None:
        with self._lock:
            self._names[target] = name
            new = name not in self._watched
            self._watched.add(name)
        if new:
            self._spawn_watch(name)

    # -- one watch per service name --------------------------------------------------------

    def watch_step(self, name: str) -> float | None:
        """One blocking read of `name`'s health; the verdicts of its targets follow it."""
        with self._lock:
            if self._stopping:
                return None
            index = self._indexes.get(name, 0)
        started, timings = self._clock(), self._timings
        try:
            read = self._port.health_service(  # the first read answers at once
                name, index=index, wait=timings.watch_wait_text if index else None,
                timeout=timings.watch_timeout if index else timings.request_timeout)
        except ConsulError as exc:
            log.log(log_level(exc), "health watch failed", extra={"service": name,
                                                                  "error": str(exc)})
            with self._lock:
                self._indexes[name] = 0  # start over: the answer may have been lost
            return self._clock() + timings.retry_cap
        self._observed(name, read)
        self._report()
        return started + timings.min_watch_interval

    def _observed(self, name: str, read: HealthRead) -> None:
        with self._lock:
            last = self._indexes.get(name, 0)
            # An index going backwards (a snapshot restore) restarts the watch (§3).
            self._indexes[name] = 0 if read.index is None or read.index < last else read.index
            for target in self._targets:
                if self._names.get(target) == name:
                    alias = f"{self._alias_prefix}{target}" if self._alias_prefix else ""
                    self._verdicts[target] = verdict_of(read, target, alias)

    # -- reporting ------------------------------------------------------------------------

    def _report(self) -> None:
        """Post the overall verdict when it changed, or when a recheck of a healthy one is
        due. Nothing before every target has a verdict."""
        with self._lock:
            verdicts = [self._verdicts.get(target) for target in self._targets]
            if not verdicts or any(v is None for v in verdicts):
                self._recheck_at = None  # the first verdict is reported when it comes
                return
            failing = [v for v in verdicts if v is not None and not v.healthy]
            healthy = not failing
            recheck_due = self._recheck_at is not None and self._clock() >= self._recheck_at
            if healthy == self._reported and not (healthy and recheck_due):
                if not healthy:
                    self._recheck_at = None  # the change to healthy will be reported
                return
            if healthy != self._reported:
                self._rechecks = 0
            self._reported, self._recheck_at = healthy, None
        if healthy:
            self._post(Event.APPLICATION_HEALTHY, "every target is healthy")
        else:
            first = failing[0]
            self._post(Event.APPLICATION_CRITICAL, "; ".join(v.critical for v in failing),
                       Facts(check_id=first.check_id))
