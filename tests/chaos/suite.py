"""Every scenario by name, and running any of them N times into a summary.

Used by `scripts/chaos.py` (the table, JSON and pictures) and by the pytest suite.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.chaos import fuzz, soak
from tests.chaos.known import KnownProblem
from tests.chaos.report import ScenarioSummary, timeline_svg
from tests.chaos.runner import RunResult, run_scenario
from tests.chaos.scenarios import SCENARIOS, TTL

CI_FUZZ_EXAMPLES = 8
FULL_FUZZ_EXAMPLES = 60
CI_SOAK_MINUTES = 1.0
FULL_SOAK_MINUTES = 10.0


@dataclass(frozen=True)
class Entry:
    name: str
    item: int
    title: str
    detection: str
    ci: bool
    repeatable: bool  # worth several runs (the fuzz and the soak are one long run each)
    mode: str = "nomad"  # "nomad" (Nomad in the loop) or "consul-only"
    expected_failure: KnownProblem | None = None  # see known.py


def entries() -> list[Entry]:
    listed = [Entry(s.name, s.item, s.title, s.detection.meaning, s.ci, True,
                    s.settings.mode, s.expected_failure)
              for s in SCENARIOS.values()]
    listed.append(Entry(fuzz.NAME, 12, fuzz.TITLE, fuzz.DETECTION, True, False,
                        fuzz.SETTINGS.mode))
    listed.append(Entry(soak.NAME, 13, soak.TITLE, soak.DETECTION, True, False,
                        soak.SETTINGS.mode, soak.EXPECTED_FAILURE))
    return listed


def entry(name: str) -> Entry:
    found = {e.name: e for e in entries()}
    if name not in found:
        raise KeyError(f"no chaos scenario {name!r}; known: {', '.join(found)}")
    return found[name]


@dataclass(frozen=True)
class Options:
    runs: int = 1
    soak_minutes: float = CI_SOAK_MINUTES
    fuzz_examples: int = CI_FUZZ_EXAMPLES
    seed: int = 1


def run_entry(item: Entry, options: Options, workdir: Path,
              progress: Callable[[str], None] = lambda line: None) -> ScenarioSummary:
    runs = options.runs if item.repeatable else 1
    results = []
    for number in range(1, runs + 1):
        started = time.monotonic()
        result = _run_once(item, number, workdir / item.name / f"run-{number}", options)
        verdict = "ok" if result.ok else f"{len(result.violations)} violation(s)"
        progress(f"{item.name} run {number}/{runs}: {verdict} "
                 f"({time.monotonic() - started:.1f}s)")
        results.append(result)
    return ScenarioSummary(item.name, item.item, item.title, item.detection, results,
                           item.mode, item.expected_failure)


def _run_once(item: Entry, number: int, workdir: Path, options: Options) -> RunResult:
    if item.name == fuzz.NAME:
        return fuzz.run_fuzz(number, workdir, options.fuzz_examples, options.seed)
    if item.name == soak.NAME:
        return soak.run_soak(number, workdir, options.soak_minutes, options.seed)
    return run_scenario(SCENARIOS[item.name], number, workdir)


def unexcused_violations(summary: ScenarioSummary) -> list[str]:
    """The violations its expected failure does not excuse (all of them when it names
    none; see known.py)."""
    problem = summary.expected_failure
    return [f"run {r.run}: {v}" for r in summary.results for v in r.violations
            if problem is None or not problem.excuses(v, r.nomad_rewrites)]


def draw(summary: ScenarioSummary, path: Path) -> Path:
    worst = summary.worst
    path.write_text(timeline_svg(worst, f"{summary.name} (issue item {summary.item}): "
                                        f"{summary.title}"))
    return path


def settings_json(options: Options) -> dict[str, object]:
    from tests.chaos.scenarios import BASE

    nomad = BASE.nomad
    return {
        "ttl_s": TTL, "sleep_s": BASE.sleep, "lock_delay_s": BASE.lock_delay,
        "nomad": None if nomad is None else {
            "sync_period_s": nomad.sync_period, "check_interval_s": nomad.check_interval,
            "restart_delay_s": nomad.restart_delay, "kill_timeout_s": nomad.kill_timeout,
            "min_healthy_time_s": nomad.min_healthy_time},
        "runs": options.runs, "soak_minutes": options.soak_minutes,
        "fuzz_examples": options.fuzz_examples, "seed": options.seed,
        "python": sys.version.split()[0],
    }
