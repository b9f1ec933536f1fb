"""Prometheus metrics of the sidecar, on an injected registry.

Guarantees:
- Truthful from the first scrape: the state is the initial state and ``is_leader`` is 0 as soon
  as ``Metrics`` is constructed (``on_enter`` of the initial state never fires).
- No missing series: every label set known up front (the transition table, state x event for
  refusals, each bounded result/reason set) is exported at 0 before it first happens.
- Bounded cardinality: result and reason labels only take the values listed in this module;
  anything else raises ``ValueError`` (a programming error, caught by the callers' tests).
  ``endpoint`` of a Consul request must be a route template such as ``/v1/session/renew``,
  never a path with IDs in it.
- Output passes ``promtool check metrics``: base units, ``_total`` counters,
  ``_timestamp_seconds`` gauges, and no ``_created`` series (switched off process-wide:
  prometheus_client has no per-registry switch, and this registry is the process's only one).
- ``consul_leader_state{state}`` is read in one step per scrape: exactly one state is 1.
- Blocking queries (watches, which wait up to ``CONSUL_LEADER_WATCH_WAIT``) are measured apart
  from ordinary requests, so request-latency quantiles are about requests that should be fast.

Not guaranteed: the few metrics one ``transition`` updates are not set atomically, so a scrape
taken during the call can see the new state next to the old ``is_leader`` for that one scrape.

The machine's state and event names are parameters, so this module never imports ``fsm``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric

# The only values the bounded labels take; each is exported at 0 from the start.
RENEW_FAILURE_REASONS: Final = ("unavailable", "not_found", "denied")
ACQUIRE_RESULTS: Final = ("acquired", "held", "lock_delay", "invalid_session", "error")
TAG_WRITE_RESULTS: Final = ("ok", "error", "denied", "conflict")
HOOK_NAMES: Final = ("promote", "demote")
HOOK_RESULTS: Final = ("ok", "failed", "timeout")
# POST /switchover (issue 12): released (200), initiated (202: release still under way),
# refused (404/409/503: not the leader, no candidate, unknown or unfit target), invalid (400),
# denied (401/403/503 from the write gate), error (Consul could not be asked).
SWITCHOVER_RESULTS: Final = ("released", "initiated", "refused", "invalid", "denied", "error")

PREFIX: Final = "consul_leader"
TRANSPORT_ERROR_CODE: Final = "error"

# A session renew is one Consul round trip: from a local agent (~1 ms) to a slow,
# cross-datacenter or overloaded server (seconds), capped near the HTTP timeout.
RENEW_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0)
# Every request other than a watch is one such round trip too.
REQUEST_BUCKETS: Final = RENEW_BUCKETS
# A watch ends when what it watches changes (any time) or when its ?wait= runs out: 5m by
# default, at most 10m, plus up to wait/16 of jitter that Consul adds. The buckets at 300/320
# and 600/640 tell "timed out" from "changed" at both common settings.
WATCH_BUCKETS: Final = (0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 320.0,
                        600.0, 640.0)


# Issue 12: what /status and consul_leader_health_gate show of the health gate.
HEALTH_GATE_STATES: Final = ("off", "waiting", "healthy", "critical")


def _require(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


class Metrics:
    """All ``consul_leader_*`` metrics; one instance per process, one registry per instance."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        states: Sequence[str],
        initial_state: str,
        transitions: Iterable[tuple[str, str, str]],
        events: Sequence[str],
        version: str,
        revision: str = "unknown",
        process_collectors: bool = True,
        leader_state: str = "Leader",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Register every metric on ``registry`` and report ``initial_state``.

        ``transitions`` are (from, to, event) triples pre-initialized at 0. ``leader_state`` is
        the state that counts as leading; ``clock`` gives wall-clock seconds for timestamps.
        ``version`` and ``revision`` (the source commit, or "unknown") label ``build_info``.
        """
        _require(initial_state, tuple(states), "initial state")
        _require(leader_state, tuple(states), "leader state")
        # Before the first collection; see the module docstring. (Untyped upstream.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._states = tuple(states)
        self._leader_state = leader_state
        self._clock = clock
        self._register_state_metrics(registry, states, initial_state)
        self._register_session_metrics(registry)
        self._register_consul_metrics(registry)
        self._register_side_effect_metrics(registry)
        self._register_eviction_metrics(registry)
        self._register_build_info(registry, version, revision)
        self._register_switchover_metrics(registry)
        self._register_health_gate(registry)
        if process_collectors:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self._preinitialize(states, transitions, events)
        self._show_state(initial_state)

    # -- registration -------------------------------------------------------------------------

    def _register_state_metrics(self, registry: CollectorRegistry, states: Sequence[str],
                                initial_state: str) -> None:
        self._state = _StateGauge(states, initial_state)
        registry.register(self._state)
        self._is_leader = Gauge(f"{PREFIX}_is_leader",
                                "1 while this sidecar is the leader of its group, else 0.",
                                registry=registry)
        self._leader_since = Gauge(
            f"{PREFIX}_leader_since_timestamp_seconds",
            "Unix time at which this sidecar last became leader; 0 while it is not leader.",
            registry=registry)
        self._transitions = Counter(f"{PREFIX}_transitions",
                                    "State transitions, by from-state, to-state and event.",
                                    ["from", "to", "event"], registry=registry)
        self._refused = Counter(
            f"{PREFIX}_events_refused",
            "Events refused in the state they arrived in; the state is unchanged.",
            ["state", "event"], registry=registry)

    def _register_health_gate(self, registry: CollectorRegistry) -> None:
        # Issue 12: health-aware leadership (CONSUL_LEADER_HEALTH_GATE).
        self._health_gate = _StateGauge(
            HEALTH_GATE_STATES, HEALTH_GATE_STATES[0], name=f"{PREFIX}_health_gate",
            help_text="Health gate (CONSUL_LEADER_HEALTH_GATE): 1 for its state: off, waiting "
                      "(no verdict yet), healthy, or critical (out of the election).")
        registry.register(self._health_gate)

    def _register_session_metrics(self, registry: CollectorRegistry) -> None:
        self._renew_duration = Histogram(f"{PREFIX}_session_renew_duration_seconds",
                                         "Latency of successful Consul session renewals.",
                                         buckets=RENEW_BUCKETS, registry=registry)
        self._renew_failures = Counter(f"{PREFIX}_session_renew_failures",
                                       "Failed session renewals, by reason.",
                                       ["reason"], registry=registry)
        self._last_renew = Gauge(f"{PREFIX}_last_renew_timestamp_seconds",
                                 "Unix time of the last successful session renewal; 0 if none.",
                                 registry=registry)

    def _register_consul_metrics(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            f"{PREFIX}_consul_requests",
            'Consul HTTP requests, by method, endpoint template and status ("error": no answer).',
            ["method", "endpoint", "code"], registry=registry)
        self._request_duration = Histogram(
            f"{PREFIX}_consul_request_duration_seconds",
            "Duration of Consul HTTP requests other than watches (blocking queries).",
            ["method", "endpoint"], buckets=REQUEST_BUCKETS, registry=registry)
        self._watches = Counter(
            f"{PREFIX}_consul_watches",
            'Consul blocking queries (watches), by endpoint template and status ("error": no '
            "answer).",
            ["endpoint", "code"], registry=registry)
        self._watch_duration = Histogram(
            f"{PREFIX}_consul_watch_duration_seconds",
            "Duration of Consul blocking queries: until a change, or the wait runs out.",
            ["endpoint"], buckets=WATCH_BUCKETS, registry=registry)
        self._acquire_attempts = Counter(f"{PREFIX}_lock_acquire_attempts",
                                         "Attempts to acquire the lock key, by result.",
                                         ["result"], registry=registry)

    def _register_side_effect_metrics(self, registry: CollectorRegistry) -> None:
        self._tag_writes = Counter(f"{PREFIX}_tag_writes",
                                   "Writes of the role tags to the target services, by result.",
                                   ["result"], registry=registry)
        self._fencing_token = Gauge(
            f"{PREFIX}_fencing_token",
            "LockIndex of the lock key when this sidecar last acquired it; 0 before that.",
            registry=registry)
        self._hook_runs = Counter(f"{PREFIX}_hook_runs",
                                  "Runs of the promote/demote hooks, by hook and result.",
                                  ["hook", "result"], registry=registry)
        self._over_other_primary = Counter(
            f"{PREFIX}_published_over_other_primary",
            "Times a new leader published its primary role while Consul still listed another "
            "passing primary, after waiting for that one's role check to expire.",
            registry=registry)

    def _register_eviction_metrics(self, registry: CollectorRegistry) -> None:
        self._stale_evicted = Counter(
            f"{PREFIX}_stale_primaries_evicted",
            "Other instances a new leader deregistered from the catalog after its bounded "
            "wait: still listed as passing primaries, but their session no longer existed.",
            registry=registry)

    def _register_build_info(self, registry: CollectorRegistry, version: str,
                             revision: str) -> None:
        build = Info(f"{PREFIX}_build",
                     "Version and source revision of the sidecar, and its Python version.",
                     registry=registry)
        build.info({"version": version, "revision": revision,
                    "python_version": platform.python_version()})

    def _register_switchover_metrics(self, registry: CollectorRegistry) -> None:
        self._switchovers = Counter(f"{PREFIX}_switchovers",
                                    "Switchover requests to this sidecar, by result.",
                                    ["result"], registry=registry)
        for result in SWITCHOVER_RESULTS:
            self._switchovers.labels(result)
        self._priority = Gauge(f"{PREFIX}_priority",
                               "CONSUL_LEADER_PRIORITY of this sidecar (0: never leads).",
                               registry=registry)

    def _preinitialize(self, states: Sequence[str], transitions: Iterable[tuple[str, str, str]],
                       events: Sequence[str]) -> None:
        # Touching .labels() creates the child at 0, so rate() and absence checks see it.
        for source, dest, event in transitions:
            self._transitions.labels(source, dest, event)
        for state in states:
            for event in events:
                self._refused.labels(state, event)
        for reason in RENEW_FAILURE_REASONS:
            self._renew_failures.labels(reason)
        for result in ACQUIRE_RESULTS:
            self._acquire_attempts.labels(result)
        for result in TAG_WRITE_RESULTS:
            self._tag_writes.labels(result)
        for hook in HOOK_NAMES:
            for result in HOOK_RESULTS:
                self._hook_runs.labels(hook, result)

    # -- recording ----------------------------------------------------------------------------

    def transition(self, source: str, dest: str, event: str) -> None:
        """Count a transition and show the new state (state, is-leader, leader-since)."""
        _require(dest, self._states, "state")
        self._transitions.labels(source, dest, event).inc()
        if dest == self._leader_state and source != self._leader_state:
            self._leader_since.set(self._clock())
        self._show_state(dest)

    def refused(self, state: str, event: str) -> None:
        """Count an event that was not allowed in ``state``."""
        self._refused.labels(state, event).inc()

    def consul_request(self, method: str, endpoint: str, status: int | None,
                       seconds: float, watch: bool = False) -> None:
        """Count one Consul request; ``status`` None means no HTTP answer (transport failure).

        A ``watch`` (blocking query) goes to the watch metrics only, so the request-duration
        quantiles are not swamped by queries that wait minutes on purpose.
        """
        code = TRANSPORT_ERROR_CODE if status is None else str(status)
        if watch:
            self._watches.labels(endpoint, code).inc()
            self._watch_duration.labels(endpoint).observe(seconds)
            return
        self._requests.labels(method, endpoint, code).inc()
        self._request_duration.labels(method, endpoint).observe(seconds)

    def session_renewed(self, seconds: float) -> None:
        """Record a successful renew: its latency and the time it was confirmed."""
        self._renew_duration.observe(seconds)
        self._last_renew.set(self._clock())

    def session_renew_failed(self, reason: str) -> None:
        _require(reason, RENEW_FAILURE_REASONS, "renew failure reason")
        self._renew_failures.labels(reason).inc()

    def acquire_attempt(self, result: str) -> None:
        _require(result, ACQUIRE_RESULTS, "acquire result")
        self._acquire_attempts.labels(result).inc()

    def tag_write(self, result: str) -> None:
        _require(result, TAG_WRITE_RESULTS, "tag write result")
        self._tag_writes.labels(result).inc()

    def fencing_token(self, value: int) -> None:
        self._fencing_token.set(value)

    def published_over_other_primary(self) -> None:
        self._over_other_primary.inc()

    def stale_primary_evicted(self) -> None:
        self._stale_evicted.inc()

    def health_gate(self, state: str) -> None:
        """The health gate's state: off, waiting (no verdict yet), healthy or critical."""
        _require(state, HEALTH_GATE_STATES, "health gate state")
        self._health_gate.set(state)

    def hook_run(self, hook: str, result: str) -> None:
        _require(hook, HOOK_NAMES, "hook")
        _require(result, HOOK_RESULTS, "hook result")
        self._hook_runs.labels(hook, result).inc()

    def switchover(self, result: str) -> None:
        _require(result, SWITCHOVER_RESULTS, "switchover result")
        self._switchovers.labels(result).inc()

    def priority(self, value: int) -> None:
        self._priority.set(value)

    def _show_state(self, state: str) -> None:
        self._state.set(state)
        leading = state == self._leader_state
        self._is_leader.set(1 if leading else 0)
        if not leading:
            self._leader_since.set(0)


class _StateGauge:
    """``consul_leader_state{state}``: 1 for the current state, 0 for every other.

    A collector rather than a labelled Gauge: one scrape reads the state once, so it never sees
    two states at 1 (or none) halfway through a change. Not prometheus_client's Enum: that
    names its label after the metric (``consul_leader_state{consul_leader_state=...}``).
    """

    NAME: Final = f"{PREFIX}_state"
    HELP: Final = "Current state of the leader-election machine: 1 for the current state."

    def __init__(self, states: Sequence[str], initial: str, *, name: str = NAME,
                 help_text: str = HELP) -> None:
        self._states = tuple(states)
        self._current = initial
        self._name, self._help = name, help_text

    def set(self, state: str) -> None:
        self._current = state  # one assignment: a concurrent scrape sees the old or the new

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self._name, self._help, labels=["state"])]

    def collect(self) -> list[Metric]:
        current = self._current
        family = GaugeMetricFamily(self._name, self._help, labels=["state"])
        for state in self._states:
            family.add_metric([state], 1.0 if state == current else 0.0)
        return [family]

