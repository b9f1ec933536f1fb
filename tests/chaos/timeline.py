"""What a chaos run saw: Consul's health view, every sidecar's /status, and the faults.

All instants are `time.monotonic()` seconds (one clock for every process on the machine, so
the sidecars' own monotonic ages line up with ours). A sidecar reports `since` on the wall
clock; it is converted once, with the offset taken when the timeline starts.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

LEADER = "Leader"
FOLLOWER = "Follower"
CANDIDATE = "Candidate"
NO_SESSION = "NoSession"
UNREACHABLE = "unreachable"  # the process runs but /status did not answer in time
EXITED = "exited"  # the process is gone
MACHINE_STATES = (LEADER, FOLLOWER, CANDIDATE, NO_SESSION)


@dataclass(frozen=True)
class HealthSample:
    """One answer of `health/service/<name>?tag=<primary>&passing`; primaries None: no answer."""

    sent: float
    received: float
    primaries: tuple[str, ...] | None

    @property
    def at(self) -> float:
        return (self.sent + self.received) / 2

    @property
    def count(self) -> int | None:
        return None if self.primaries is None else len(self.primaries)


@dataclass(frozen=True)
class StatusSample:
    """One poll of a sidecar's /status (or the fact that it could not answer)."""

    sent: float
    received: float
    state: str
    since: float | None = None  # monotonic instant of its last state change
    session: str | None = None
    lease_remaining: float | None = None
    last_renew_age: float | None = None
    fencing_token: int | None = None
    published: bool = True  # the primary label is on every target (sidecars that say so)

    @property
    def at(self) -> float:
        return (self.sent + self.received) / 2

    @property
    def claims_leadership(self) -> bool:
        """What /primary answers 200 for: Leader, lease unexpired, primary label published."""
        return self.state == LEADER and (self.lease_remaining or 0.0) > 0 and self.published

    @property
    def renew_sent_no_earlier_than(self) -> float | None:
        """The sidecar measured its renew age somewhere between our `sent` and `received`,
        so its last confirmed renew was sent no earlier than `sent - age`."""
        if self.last_renew_age is None:
            return None
        return self.sent - self.last_renew_age


@dataclass
class FaultMark:
    """A fault as drawn and judged: instantaneous when `end` is None."""

    label: str
    start: float
    end: float | None = None
    target: str | None = None  # a sidecar name, a node, or None for the cluster
    ambiguous_for: str | None = None  # sidecar whose answers are ambiguous during the fault
    cut_off: str | None = None  # sidecar that cannot hear Consul (node lost, partition)

    @property
    def finished(self) -> float:
        return self.start if self.end is None else self.end


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened without being a fault (a Nomad sync that wrote services):
    drawn on the pictures and used to explain what the observer saw, never judged."""

    at: float
    label: str
    lanes: tuple[str, ...] = ()  # whose services it touched
    detail: str = ""
    rewrote: tuple[str, ...] = ()  # lanes whose existing service it registered again


@dataclass
class Timeline:
    """Thread-safe recorder; read it after the observer has stopped."""

    lanes: list[str]
    owners: dict[str, str]  # service ID -> lane (learnt by the observer, see lane_of)
    lane_labels: dict[str, str] = field(default_factory=dict)  # lane -> what to call it
    origin: float = field(default_factory=time.monotonic)
    wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())
    health: list[HealthSample] = field(default_factory=list)
    status: dict[str, list[StatusSample]] = field(default_factory=dict)
    faults: list[FaultMark] = field(default_factory=list)
    events: list[TimelineEvent] = field(default_factory=list)
    end: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # lane -> (sample count when sorted, samples by send time, their send times)
    _sorted: dict[str, tuple[int, list[StatusSample], list[float]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        for lane in self.lanes:
            self.status.setdefault(lane, [])

    # -- recording ---------------------------------------------------------------------

    def record_health(self, sample: HealthSample) -> None:
        with self._lock:
            self.health.append(sample)

    def record_status(self, lane: str, sample: StatusSample) -> None:
        with self._lock:
            self.status[lane].append(sample)

    def add_lane(self, lane: str, label: str) -> None:
        """A sidecar that joined during the run (an allocation placed later)."""
        with self._lock:
            if lane not in self.status:
                self.lanes.append(lane)
                self.status[lane] = []
                self.lane_labels[lane] = label

    def learn_owner(self, service_id: str, lane: str) -> None:
        with self._lock:
            self.owners.setdefault(service_id, lane)

    def record_event(self, event: TimelineEvent) -> None:
        with self._lock:
            self.events.append(event)

    def mark(self, fault: FaultMark) -> FaultMark:
        with self._lock:
            self.faults.append(fault)
        return fault

    def close(self) -> None:
        self.end = time.monotonic()

    def to_monotonic(self, wall: float) -> float:
        return wall - self.wall_offset

    # -- reading -----------------------------------------------------------------------

    @property
    def finished_at(self) -> float:
        if self.end is not None:
            return self.end
        last = [s.received for s in self.health] + [
            samples[-1].received for samples in self.status.values() if samples
        ]
        return max(last, default=self.origin)

    def health_sorted(self) -> list[HealthSample]:
        with self._lock:
            return sorted(self.health, key=lambda s: s.received)

    def lane_sorted(self, lane: str) -> list[StatusSample]:
        """The lane's samples in the order they were sent."""
        return self._lane_index(lane)[0]

    def state_at(self, lane: str, instant: float) -> StatusSample | None:
        """What `lane` was at `instant`: the last sample *sent* by then. A poll that went
        unanswered says the process was unresponsive from the moment it was sent."""
        samples, times = self._lane_index(lane)
        position = bisect.bisect_right(times, instant)
        return samples[position - 1] if position else None

    def _lane_index(self, lane: str) -> tuple[list[StatusSample], list[float]]:
        with self._lock:
            raw = self.status[lane]
            cached = self._sorted.get(lane)
            if cached is not None and cached[0] == len(raw):
                return cached[1], cached[2]
            ordered = sorted(raw, key=lambda s: s.sent)
            times = [s.sent for s in ordered]
            self._sorted[lane] = (len(ordered), ordered, times)
            return ordered, times

    def lane_of(self, service_id: str) -> str | None:
        """The lane whose allocation the service names (its ID or Meta), as the observer
        learnt it when the service first showed up; None for a stranger's."""
        with self._lock:
            return self.owners.get(service_id)
