"""Running a scenario and judging what the observer saw.

`run_scenario` starts a fresh cluster, waits for it to settle, runs the scenario's script,
waits (with a deadline) for it to settle again, stops everything and returns a `RunResult`:
the numbers of the chaos table and every violated invariant, in words.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import analysis
from tests.chaos.cluster import ChaosCluster, ClusterSettings
from tests.chaos.members import ProcessExit
from tests.chaos.scenarios import CRASH_BOUND, Run, Scenario
from tests.chaos.timeline import FaultMark, Timeline
from tests.fencing.judge import FencingFigures

SETUP_TIMEOUT = 15.0  # first election of freshly started processes, on a loaded 2-core box
SETTLE_MARGIN = 3.0


@dataclass(frozen=True)
class Expectation:
    """What DESIGN §6 promises after a fault."""

    detection: str  # "reaction", "restore", "measured" or "none"
    bound: float | None  # seconds until one live primary; None: no bound applies
    bound_from: str = "start"  # "start" of the first fault, or "end" of the last
    same_leader: bool = False  # no false alarm: nothing may change
    new_term: bool = False  # the fault ends the leader's term: its old claim is no recovery


@dataclass
class RunResult:
    scenario: str
    run: int
    duration: float
    overlap: float
    view: analysis.ViewTimes  # Consul's view over the judged window (no / one / several)
    max_no_leader: float
    double_leader: float  # seconds with two sidecars claiming leadership by /status
    detections: list[float]
    recovery: float | None
    bound: float | None
    leader_changes: int
    crashes: list[str]
    busiest_second: dict[str, int]
    violations: list[str]
    timeline: Timeline
    workdir: Path
    # Nomad syncs that re-registered a sidecar's existing service in the judged window
    # (each one undoes what the sidecar wrote there: Meta, checks, maybe tags).
    nomad_rewrites: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    log_paths: dict[str, list[Path]] = field(default_factory=dict)  # lane -> its logs
    fencing: FencingFigures | None = None  # the writers' writes (tests/fencing/judge.py)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "duration_s": round(self.duration, 3),
            "overlap_s": round(self.overlap, 3),
            "no_primary_s": round(self.view.none, 3),
            "one_primary_share": _rounded(self.view.one_share, 4),
            "observed_s": round(self.view.observed, 3),
            "unobserved_s": round(self.view.unobserved, 3),
            "max_no_leader_s": round(self.max_no_leader, 3),
            "double_leader_s": round(self.double_leader, 3),
            "detection_s": [round(d, 3) for d in self.detections],
            "recovery_s": _rounded(self.recovery),
            "bound_s": self.bound,
            "leader_changes": self.leader_changes,
            "nomad_rewrites": self.nomad_rewrites,
            "crashes": self.crashes,
            "busiest_second": self.busiest_second,
            "violations": self.violations,
            "faults": [
                {"label": f.label, "target": f.target,
                 "start_s": round(f.start - self.timeline.origin, 3),
                 "end_s": None if f.end is None else round(f.end - self.timeline.origin, 3)}
                for f in self.timeline.faults
            ],
            "workdir": str(self.workdir),
            "fencing": None if self.fencing is None else self.fencing.to_json(),
            **self.notes,
        }


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def expectation_of(scenario: Scenario) -> Expectation:
    return Expectation(scenario.detection.kind, scenario.bound, scenario.bound_from,
                       scenario.same_leader, scenario.new_term)


# -- running ----------------------------------------------------------------------------------


def run_scenario(scenario: Scenario, run: int, workdir: Path) -> RunResult:
    problems: list[str] = []
    measured: float | None = None
    started = time.monotonic()
    with ChaosCluster(workdir, scenario.settings) as cluster:
        leader = cluster.wait_settled(SETUP_TIMEOUT)
        old_term = cluster.term(leader) if scenario.new_term else None
        context = Run(cluster, leader)
        window_start = time.monotonic()
        try:
            scenario.script(context)
        except Exception as exc:  # the script's own step failed: report it, still judge
            problems.append(f"scenario step failed: {exc!r}")
            problems.append(traceback.format_exc(limit=3))
        problems += context.problems
        measured = context.measured_detection
        problems += _restarted_or_problem(cluster)
        settle = max(scenario.bound or 0.0, CRASH_BOUND) + SETTLE_MARGIN
        problems += _settled_or_problem(cluster, settle, old_term)
    return judge(
        scenario.name, run, cluster, expectation_of(scenario), leader.name, window_start,
        problems, measured, time.monotonic() - started,
    )


def _restarted_or_problem(cluster: ChaosCluster) -> list[str]:
    try:
        cluster.await_restarts()
    except AssertionError as exc:
        return [f"an exited sidecar did not run again: {exc}"]
    return []


def _settled_or_problem(cluster: ChaosCluster, timeout: float,
                        old_term: tuple[str, float] | None) -> list[str]:
    try:
        cluster.wait_settled(timeout, old_term)
    except AssertionError as exc:
        return [f"did not settle after the fault: {exc}"]
    return []


# -- judging ------------------------------------------------------------------------------------


def judge(name: str, run: int, cluster: ChaosCluster, expectation: Expectation,
          leader_lane: str, window_start: float, problems: list[str],
          measured_detection: float | None, duration: float) -> RunResult:
    timeline = cluster.timeline
    faults = sorted(timeline.faults, key=lambda f: f.start)
    verdict = judge_faults(timeline, faults, expectation, leader_lane, measured_detection)
    crashes, busiest, run_wide = run_violations(cluster)
    return RunResult(
        scenario=name, run=run, duration=duration,
        overlap=analysis.overlap_seconds(timeline.health_sorted()),
        view=analysis.view_times(timeline.health_sorted(), window_start, timeline.finished_at),
        max_no_leader=analysis.longest_no_leader(timeline, window_start, timeline.finished_at),
        double_leader=analysis.double_leader_seconds(timeline),
        detections=[] if verdict.detection is None else [verdict.detection],
        recovery=verdict.recovery, bound=expectation.bound,
        leader_changes=analysis.leader_changes(timeline, window_start, leader_lane),
        crashes=crashes, busiest_second=busiest,
        violations=[*problems, *verdict.violations, *run_wide],
        timeline=timeline, workdir=cluster.workdir, log_paths=log_paths_of(cluster),
        nomad_rewrites=analysis.nomad_rewrites(timeline, window_start),
        fencing=cluster.fencing,
    )


@dataclass
class FaultVerdict:
    detection: float | None
    recovery: float | None
    violations: list[str]


def judge_faults(timeline: Timeline, faults: list[FaultMark], expectation: Expectation,
                 leader_lane: str, measured_detection: float | None,
                 end: float | None = None) -> FaultVerdict:
    """Detection, recovery and the scenario's own promises, for one fault (or one group of
    faults that form a scenario), judged up to `end`."""
    if not faults:
        return FaultVerdict(None, None, ["the scenario marked no fault"])
    detection = _detection(timeline, faults[0], expectation, measured_detection, end)
    recovery, violations = _recovery(timeline, faults, expectation, leader_lane)
    if expectation.same_leader:
        violations += analysis.unchanged_leadership_violations(
            timeline, faults[0].start, leader_lane, end)
    for fault in faults:
        violations += analysis.ambiguity_violations(timeline, fault)
    return FaultVerdict(detection, recovery, violations)


def run_violations(cluster: ChaosCluster) -> tuple[list[str], dict[str, int], list[str]]:
    """What holds for the whole run: safety (fencing included), crashes and hot loops."""
    busiest = {s.name: cluster.proxies[s.node].stats.busiest_second() for s in cluster.sidecars}
    crashes = crash_reports(cluster.exits, cluster)
    violations = [*_safety_violations(cluster.timeline, cluster.settings),
                  *fenced_writes_violations(cluster), *analysis.hot_loops(busiest), *crashes]
    return crashes, busiest, violations


def _detection(timeline: Timeline, fault: FaultMark, expectation: Expectation,
               measured: float | None, end: float | None) -> float | None:
    if expectation.detection == "reaction":
        return analysis.first_reaction(timeline, fault, end)
    if expectation.detection == "restore":
        return analysis.restored(timeline, fault)
    if expectation.detection == "measured":
        return measured
    return None


def _recovery(timeline: Timeline, faults: list[FaultMark], expectation: Expectation,
              leader_lane: str) -> tuple[float | None, list[str]]:
    reference = faults[0].start if expectation.bound_from == "start" else faults[-1].finished
    old_term = (analysis.term_at(timeline, leader_lane, faults[0].start)
                if expectation.new_term else None)
    at = analysis.recovered_at(timeline, reference, old_term)
    if at is None:
        return None, ["no single live primary after the fault, ever"]
    recovery = at - reference
    bound = expectation.bound
    if bound is not None and recovery > bound + analysis.SAMPLE_SLACK:
        return recovery, [f"one live primary only {recovery:.2f}s after the fault "
                          f"{'began' if expectation.bound_from == 'start' else 'ended'} "
                          f"(bound {bound:g}s)"]
    return recovery, []


def _safety_violations(timeline: Timeline, settings: ClusterSettings) -> list[str]:
    violations = []
    overlaps = analysis.overlap_samples(timeline.health_sorted())
    if overlaps:
        first = overlaps[0]
        lanes = [timeline.lane_of(p) or p for p in first.primaries or ()]
        violations.append(
            f"two passing primaries in Consul in {len(overlaps)} samples "
            f"({analysis.overlap_seconds(timeline.health_sorted()):.2f}s), first at "
            f"+{first.at - timeline.origin:.2f}s: {', '.join(lanes)}"
        )
    pairs = analysis.untolerated_status_overlaps(timeline, settings.ttl, settings.lock_delay)
    if pairs:
        a, b = pairs[0]
        violations.append(
            f"two Leaders by /status ({len(pairs)} overlaps), first {a.lane} and {b.lane} "
            f"around +{max(a.start, b.start) - timeline.origin:.2f}s"
        )
    violations += analysis.fencing_violations(timeline)
    return violations


def fenced_writes_violations(cluster: ChaosCluster) -> list[str]:
    """Stale writes accepted and the like (tests/fencing/judge.py), writers that ended on
    their own, and a run in which no writer ever wrote (the check would be empty)."""
    figures = cluster.fencing
    if figures is None:
        return ["fencing: the writes were not judged"]
    found = [*figures.violations(cluster.timeline.origin), *cluster.writer_problems]
    if figures.accepted == 0:
        found.append("fencing: no write was accepted in the whole run")
    return found


def log_paths_of(cluster: ChaosCluster) -> dict[str, list[Path]]:
    return {member.name: member.log_paths() for member in cluster.sidecars}


WORKER_RESTARTED = "worker failed; restarting it"  # adapters/threads.py: a bug caught by the net
UNCAUGHT = "Traceback (most recent call last)"  # a thread that died outside the net


def crash_reports(exits: list[ProcessExit], cluster: ChaosCluster) -> list[str]:
    """A process that ended on its own, ended badly after SIGTERM, or a thread that died of
    an error nobody foresaw (even if the sidecar restarted it)."""
    reports = [e.describe() for e in exits if e.crashed]
    for sidecar in cluster.sidecars:
        logs = sidecar.logs()
        for marker, what in ((UNCAUGHT, "uncaught exception(s)"),
                             (WORKER_RESTARTED, "worker thread(s) restarted after an error")):
            count = logs.count(marker)
            if count:
                first = next(line for line in logs.splitlines() if marker in line)
                reports.append(f"{sidecar.name}: {count} {what}, first: {first[-200:]}")
    return reports
