"""Scenario 13: a soak. Five sidecars; random faults of kinds 1 to 9 one after another, for a
bounded time.

Each step picks one single-fault scenario of the catalogue (items 1-9, those that run with
Nomad in the loop) at random, runs its script against the current leader, waits for Nomad to
restart a sidecar task the fault ended (after the restart delay), waits (with that scenario's
deadline) for the cluster to settle, and pauses 1-3 s before the next fault. Every step is
judged like its scenario (detection, recovery against its bound, no false alarm where
promised); the safety invariants, crashes and hot loops are judged over the whole soak.

The seed makes the sequence of faults reproducible (timings are real, so outcomes may differ).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tests.chaos import analysis
from tests.chaos.cluster import ChaosCluster
from tests.chaos.known import KnownProblem
from tests.chaos.runner import (
    SETTLE_MARGIN,
    SETUP_TIMEOUT,
    RunResult,
    expectation_of,
    judge_faults,
    log_paths_of,
    run_violations,
)
from tests.chaos.scenarios import BASE, CRASH_BOUND, SCENARIOS, Run, Scenario

NAME = "soak"
TITLE = "five sidecars, random faults of kinds 1-9 one after another"
DETECTION = "per fault, as for the fault's own scenario"
SETTINGS = replace(BASE, nodes=5)
# No known problem makes its steps fail (see known.py).
EXPECTED_FAILURE: KnownProblem | None = None
# Faults 1-9 on their own, in the soak's own settings (combined faults and other settings
# have their own scenarios).
COMBINED = ("key-deleted-leader-cut-off", "key-overwritten-then-handover")
KINDS = tuple(s for s in SCENARIOS.values()
              if s.item <= 9 and s.name not in COMBINED and s.settings == BASE)


@dataclass
class Step:
    scenario: Scenario
    leader: str
    started: float
    ended: float
    measured_detection: float | None
    problems: list[str]


def run_soak(run_number: int, workdir: Path, minutes: float, seed_value: int) -> RunResult:
    rng = random.Random(seed_value)
    started = time.monotonic()
    deadline = started + minutes * 60
    steps: list[Step] = []
    problems: list[str] = []
    with ChaosCluster(workdir, SETTINGS) as cluster:
        first_leader = cluster.wait_settled(SETUP_TIMEOUT)
        window_start = time.monotonic()
        while time.monotonic() < deadline:
            step = _step(cluster, rng.choice(KINDS))
            steps.append(step)
            if any(p.startswith("did not settle") for p in step.problems):
                problems.append(f"stopped after step {len(steps)}: the cluster did not settle")
                break
            time.sleep(rng.uniform(1.0, 3.0))  # the soak's schedule between faults
    return _judged(cluster, steps, problems, first_leader.name, window_start,
                   run_number, time.monotonic() - started, seed_value)


def _step(cluster: ChaosCluster, scenario: Scenario) -> Step:
    leader = cluster.wait_settled(CRASH_BOUND + SETTLE_MARGIN)
    old_term = cluster.term(leader) if scenario.new_term else None
    run = Run(cluster, leader)
    begun = time.monotonic()
    problems: list[str] = []
    try:
        scenario.script(run)
    except Exception as exc:  # report the failed step, keep soaking
        problems.append(f"step failed: {exc!r}")
    problems += run.problems
    settle = max(scenario.bound or 0.0, CRASH_BOUND) + SETTLE_MARGIN
    try:
        cluster.await_restarts()  # Nomad restarts what the fault ended, after its delay
        cluster.wait_settled(settle, old_term)
        _restart_the_stopped(cluster)
    except AssertionError as exc:
        problems.append(f"did not settle: {exc}")
    return Step(scenario, leader.name, begun, time.monotonic(), run.measured_detection,
                problems)


def _restart_the_stopped(cluster: ChaosCluster) -> None:
    """The Consul-only setting: start what a fault ended (Nomad did it already otherwise)."""
    stopped = [s for s in cluster.sidecars if not s.running()]
    for sidecar in stopped:
        cluster.restart(sidecar)
    if stopped:
        cluster.wait_settled(CRASH_BOUND + SETTLE_MARGIN)


def _judged(cluster: ChaosCluster, steps: list[Step], problems: list[str], first_leader: str,
            window_start: float, run_number: int, duration: float,
            seed_value: int) -> RunResult:
    timeline = cluster.timeline
    detections: list[float] = []
    recoveries: list[float] = []
    violations = list(problems)
    for index, step in enumerate(steps, 1):
        faults = sorted((f for f in timeline.faults if step.started <= f.start <= step.ended),
                        key=lambda f: f.start)
        verdict = judge_faults(timeline, faults, expectation_of(step.scenario), step.leader,
                               step.measured_detection, end=step.ended)
        if verdict.detection is not None:
            detections.append(verdict.detection)
        if verdict.recovery is not None:
            recoveries.append(verdict.recovery)
        violations += [f"step {index} ({step.scenario.name}): {v}"
                       for v in [*step.problems, *verdict.violations]]
    crashes, busiest, run_wide = run_violations(cluster)
    return RunResult(
        scenario=NAME, run=run_number, duration=duration,
        overlap=analysis.overlap_seconds(timeline.health_sorted()),
        view=analysis.view_times(timeline.health_sorted(), window_start, timeline.finished_at),
        max_no_leader=analysis.longest_no_leader(timeline, window_start, timeline.finished_at),
        double_leader=analysis.double_leader_seconds(timeline),
        detections=detections, recovery=max(recoveries, default=None), bound=None,
        leader_changes=analysis.leader_changes(timeline, window_start, first_leader),
        crashes=crashes, busiest_second=busiest, violations=[*violations, *run_wide],
        timeline=timeline, workdir=cluster.workdir,
        notes={"seed": seed_value, "steps": [s.scenario.name for s in steps]},
        log_paths=log_paths_of(cluster),
        nomad_rewrites=analysis.nomad_rewrites(timeline, window_start),
        fencing=cluster.fencing,
    )
