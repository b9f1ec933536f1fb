"""Judging a timeline: the numbers of the chaos table and the invariants of DESIGN §3 and §6.

Pure functions of a `Timeline` (no I/O), so they are unit-tested with hand-made samples.

Definitions (also printed under the table):
* overlap: total time during which Consul's health view listed two or more passing primaries
  (each sample counts until the next one).
* no passing primary: total time, in the judged window (from the cluster's first settled
  instant to the end of the run), during which the observer's last answered sample of
  `health/service/<name>?tag=<primary>&passing` listed no instance at all. Each answered
  sample counts from its midpoint (between sending and the answer) to the next sample's
  midpoint; the span of an unanswered sample (no answer within 1 s) is unobserved and counts
  for nothing. One primary share: the time with exactly one instance listed, over the
  observed time in the window (steady state wants 100 %).
* no leader: a stretch during which Consul listed no passing primary whose sidecar claimed
  leadership by /status (what /primary answers 200 for); a listed but dead or paused
  primary serves no one, so it counts as no leader.
* recovery: from the reference instant (the fault's start or end, per scenario) to the first
  sample listing exactly one passing primary whose sidecar claims leadership.
* two Leaders by /status: two sidecars both *certainly* claiming leadership (what /primary
  answers 200 for) at one instant. A sidecar certainly claimed between two consecutive samples
  that both show Leader with the same `since` and session and an unexpired lease (a lease, once
  expired, never comes back). The one tolerated case (the lead's decision, README): with a
  lock-delay below the TTL, a sidecar cut off from Consul (node lost, partition) may go on
  claiming until its own deadline, at most TTL after the fault began, while another leads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tests.chaos.timeline import (
    LEADER,
    MACHINE_STATES,
    FaultMark,
    HealthSample,
    Timeline,
)

# Sampling is every 50 ms: a measured duration may be off by up to two periods.
SAMPLE_SLACK = 0.1
# The sidecar turns the last clean answer it got into a state change within this long.
PROCESSING_SLACK = 0.25
HOT_LOOP_REQUESTS_PER_SECOND = 100


# -- Consul's view ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewTimes:
    """How long Consul's health view listed no, one, or several passing primaries, and how
    long it went unobserved (samples without an answer)."""

    none: float = 0.0
    one: float = 0.0
    several: float = 0.0
    unobserved: float = 0.0

    @property
    def observed(self) -> float:
        return self.none + self.one + self.several

    @property
    def one_share(self) -> float | None:
        return self.one / self.observed if self.observed > 0 else None


def view_times(health: Sequence[HealthSample], start: float = float("-inf"),
               end: float = float("inf")) -> ViewTimes:
    """Each sample's span, from its midpoint to the next sample's, clipped to [start, end]
    and summed by what the sample listed (see the module text)."""
    totals = {"none": 0.0, "one": 0.0, "several": 0.0, "unobserved": 0.0}
    for sample, following in itertools.pairwise(health):
        span = min(following.at, end) - max(sample.at, start)
        if span <= 0:
            continue
        count = sample.count
        kind = ("unobserved" if count is None else "none" if count == 0
                else "one" if count == 1 else "several")
        totals[kind] += span
    return ViewTimes(**totals)


def overlap_seconds(health: Sequence[HealthSample]) -> float:
    return view_times(health).several


def nomad_rewrites(timeline: Timeline, start: float) -> int:
    """How many of Nomad's syncs re-registered a sidecar's existing service after `start`."""
    return sum(1 for event in timeline.events if event.at >= start and event.rewrote)


def listed_between(timeline: Timeline, lane: str, start: float, end: float) -> float:
    """How long, within [start, end], Consul listed `lane`'s instance as a passing primary."""
    total = 0.0
    for sample, following in itertools.pairwise(timeline.health_sorted()):
        span = min(following.at, end) - max(sample.at, start)
        if span > 0 and lane in (timeline.lane_of(p) for p in sample.primaries or ()):
            total += span
    return total


def overlap_samples(health: Sequence[HealthSample]) -> list[HealthSample]:
    return [s for s in health if (s.count or 0) >= 2]


def live_primary(timeline: Timeline, sample: HealthSample, fresh_after: float | None = None,
                 not_term: Term | None = None) -> str | None:
    """The lane of the one passing primary whose sidecar claims leadership, if exactly one.

    `fresh_after`: only a claim seen in a poll sent after that instant counts.
    `not_term`: a claim in that term (lane and `since`) does not count.
    """
    if sample.primaries is None or len(sample.primaries) != 1:
        return None
    lane = timeline.lane_of(sample.primaries[0])
    if lane is None:
        return None
    status = timeline.state_at(lane, sample.received)
    if status is None or not status.claims_leadership:
        return None
    if fresh_after is not None and status.sent < fresh_after:
        return None
    if not_term is not None and (lane, status.since) == not_term:
        return None
    return lane


Term = tuple[str, float | None]  # a lane and the instant it became Leader


def term_at(timeline: Timeline, lane: str, instant: float) -> Term | None:
    status = timeline.state_at(lane, instant)
    return (lane, status.since) if status is not None and status.state == LEADER else None


def has_leader(timeline: Timeline, sample: HealthSample) -> bool | None:
    """None when Consul did not answer: no information either way."""
    if sample.primaries is None:
        return None
    for service_id in sample.primaries:
        lane = timeline.lane_of(service_id)
        status = timeline.state_at(lane, sample.received) if lane else None
        if status is not None and status.claims_leadership:
            return True
    return False


def longest_no_leader(timeline: Timeline, start: float, end: float) -> float:
    longest, gap_started = 0.0, None
    for sample in timeline.health_sorted():
        if not start <= sample.at <= end:
            continue
        present = has_leader(timeline, sample)
        if present is None:
            continue
        if not present and gap_started is None:
            gap_started = sample.at
        elif present and gap_started is not None:
            longest = max(longest, sample.at - gap_started)
            gap_started = None
    if gap_started is not None:
        longest = max(longest, end - gap_started)
    return longest


def recovered_at(timeline: Timeline, reference: float,
                 not_term: Term | None = None) -> float | None:
    """The first instant after `reference` at which Consul lists exactly one primary whose
    sidecar, polled after `reference`, claims leadership (in another term than `not_term`)."""
    for sample in timeline.health_sorted():
        if sample.at >= reference and live_primary(
                timeline, sample, fresh_after=reference, not_term=not_term) is not None:
            return sample.at
    return None


def leader_changes(timeline: Timeline, start: float, first: str) -> int:
    """How often the live primary changed hands after `start`, when `first` led (gaps are
    not changes)."""
    holders = [live_primary(timeline, s) for s in timeline.health_sorted() if s.at >= start]
    known = [first, *(holder for holder in holders if holder is not None)]
    return sum(1 for a, b in itertools.pairwise(known) if a != b)


# -- detection -------------------------------------------------------------------------------


def first_reaction(timeline: Timeline, fault: FaultMark,
                   until: float | None = None) -> float | None:
    """Seconds from the fault to the first change it caused: a sidecar's state (at the instant
    the sidecar reports for it) or the set of passing primaries in Consul, whichever is first,
    if before `until`. A sidecar becoming unreachable or exiting is the fault itself, not a
    reaction."""
    instants = [t for t in (_first_state_change(timeline, fault.start),
                            _first_view_change(timeline, fault.start)) if t is not None]
    first = min(instants, default=None)
    if first is None or (until is not None and first > until):
        return None
    return first - fault.start


def _first_state_change(timeline: Timeline, after: float) -> float | None:
    found: list[float] = []
    for lane in timeline.lanes:
        before = timeline.state_at(lane, after)
        if before is None or before.state not in MACHINE_STATES:
            continue
        for sample in timeline.lane_sorted(lane):
            if sample.sent <= after or sample.state not in MACHINE_STATES:
                continue
            if sample.state != before.state or sample.since != before.since:
                changed = sample.since if sample.since is not None else sample.at
                found.append(max(changed, after))
                break
    return min(found, default=None)


def _first_view_change(timeline: Timeline, after: float) -> float | None:
    health = timeline.health_sorted()
    before = next((s for s in reversed(health) if s.received <= after and s.count is not None),
                  None)
    if before is None:
        return None
    for sample in health:
        if sample.received > after and sample.primaries is not None \
                and sample.primaries != before.primaries:
            return (max(sample.sent, after) + sample.received) / 2  # changed within this
    return None


def restored(timeline: Timeline, fault: FaultMark) -> float | None:
    """Seconds from the end of the fault until Consul lists one live primary again."""
    at = recovered_at(timeline, fault.finished)
    return None if at is None else at - fault.finished


# -- invariants --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    lane: str
    start: float
    end: float


def certain_claims(timeline: Timeline, lane: str) -> list[Claim]:
    claims = []
    for a, b in itertools.pairwise(timeline.lane_sorted(lane)):
        same_term = (a.claims_leadership and b.claims_leadership and a.since == b.since
                     and a.session == b.session)
        if same_term and a.received < b.sent:
            claims.append(Claim(lane, a.received, b.sent))
    return claims


def status_overlaps(timeline: Timeline) -> list[tuple[Claim, Claim]]:
    claims = [c for lane in timeline.lanes for c in certain_claims(timeline, lane)]
    return [
        (a, b) for a, b in itertools.combinations(claims, 2)
        if a.lane != b.lane and a.start < b.end and b.start < a.end
    ]


def double_leader_seconds(timeline: Timeline) -> float:
    """Total time during which two sidecars certainly claimed leadership at once."""
    spans = sorted((max(a.start, b.start), min(a.end, b.end))
                   for a, b in status_overlaps(timeline))
    total, covered_to = 0.0, float("-inf")
    for start, end in spans:
        start = max(start, covered_to)
        if end > start:
            total += end - start
            covered_to = end
    return total


def untolerated_status_overlaps(timeline: Timeline, ttl: float,
                                lock_delay: float) -> list[tuple[Claim, Claim]]:
    """Two-leader overlaps outside the one documented exception (see the module text)."""
    if lock_delay >= ttl:
        return status_overlaps(timeline)
    cut_offs = [f for f in timeline.faults if f.cut_off is not None]

    def tolerated(a: Claim, b: Claim) -> bool:
        start, end = max(a.start, b.start), min(a.end, b.end)
        return any(f.cut_off in (a.lane, b.lane)
                   and f.start <= start and end <= f.start + ttl + SAMPLE_SLACK
                   for f in cut_offs)

    return [(a, b) for a, b in status_overlaps(timeline) if not tolerated(a, b)]


def ambiguity_violations(timeline: Timeline, fault: FaultMark) -> list[str]:
    """While `fault.ambiguous_for`'s answers are all mangled, it may neither confirm a renew
    (every renew sent then was answered ambiguously) nor become Leader."""
    lane, end = fault.ambiguous_for, fault.finished
    if lane is None:
        return []
    problems = []
    for sample in timeline.lane_sorted(lane):
        if sample.received > end:
            break
        sent_after = sample.renew_sent_no_earlier_than
        if sample.sent > fault.start and sent_after is not None and sent_after > fault.start:
            problems.append(
                f"{lane} confirmed a renew sent {sent_after - fault.start:.2f}s into "
                f"'{fault.label}', whose every answer was ambiguous (lease extended)"
            )
            break
    for sample in timeline.lane_sorted(lane):
        if (sample.state == LEADER and sample.since is not None
                and fault.start + PROCESSING_SLACK < sample.since < end):
            problems.append(
                f"{lane} became Leader {sample.since - fault.start:.2f}s into "
                f"'{fault.label}', on an ambiguous answer"
            )
            break
    return problems


def fencing_violations(timeline: Timeline) -> list[str]:
    """Successive leaders hold strictly increasing fencing tokens, whatever happened to the key
    in between (deleted, overwritten): DESIGN §6."""
    terms: dict[tuple[str, int], tuple[float, str]] = {}
    for lane in timeline.lanes:
        for sample in timeline.lane_sorted(lane):
            if sample.state == LEADER and sample.session and sample.fencing_token:
                key = (sample.session, sample.fencing_token)
                if key not in terms or sample.at < terms[key][0]:
                    terms[key] = (sample.at, lane)
    ordered = sorted(terms.items(), key=lambda item: item[1][0])
    problems = []
    for ((_, previous), (t_prev, lane_prev)), ((session, token), (t_next, lane)) in \
            itertools.pairwise(ordered):
        if token <= previous:
            problems.append(
                f"fencing token went from {previous} ({lane_prev} at "
                f"+{t_prev - timeline.origin:.2f}s) to {token} ({lane} at "
                f"+{t_next - timeline.origin:.2f}s, session {session[:8]})")
    return problems


def unchanged_leadership_violations(timeline: Timeline, start: float, leader_lane: str,
                                    end: float | None = None) -> list[str]:
    """No false alarm: between `start` and `end`, Consul keeps listing the same primary and
    no sidecar changes state."""
    problems = []
    end = timeline.finished_at if end is None else end
    for sample in timeline.health_sorted():
        if not start <= sample.at <= end or sample.primaries is None:
            continue
        lanes = tuple(timeline.lane_of(p) or "?" for p in sample.primaries)
        if lanes != (leader_lane,):
            listed = ", ".join(lanes) or "none"
            problems.append(f"Consul listed {len(lanes)} primaries ({listed}) at "
                            f"+{sample.at - start:.2f}s (expected {leader_lane} throughout)")
            break
    for lane in timeline.lanes:
        before = timeline.state_at(lane, start)
        for polled in timeline.lane_sorted(lane):
            if polled.sent > end:
                break
            if polled.sent <= start or polled.state not in MACHINE_STATES or before is None:
                continue
            if (polled.state, polled.since) != (before.state, before.since):
                problems.append(f"{lane} went {before.state} -> {polled.state} at "
                                f"+{(polled.since or polled.at) - start:.2f}s")
                break
    return problems


def hot_loops(busiest: dict[str, int]) -> list[str]:
    return [f"{lane} sent {count} requests in one second (hot loop)"
            for lane, count in sorted(busiest.items()) if count > HOT_LOOP_REQUESTS_PER_SECOND]


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]
