"""The fencing figures in the chaos report and in a run's violations."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.chaos import analysis
from tests.chaos.report import ScenarioSummary, table
from tests.chaos.runner import RunResult, fenced_writes_violations
from tests.chaos.timeline import Timeline
from tests.fencing.judge import FencingFigures
from tests.fencing.store import Attempt

STALE = Attempt(7, "alloc-a", 10, "A", True, 20, 5.0)


def result(fencing: FencingFigures | None, run: int = 1) -> RunResult:
    timeline = Timeline(lanes=["a"], owners={}, origin=0.0)
    return RunResult(scenario="demo", run=run, duration=5.0, overlap=0.0,
                     view=analysis.ViewTimes(one=5.0), max_no_leader=0.0, double_leader=0.0,
                     detections=[], recovery=None, bound=None, leader_changes=0, crashes=[],
                     busiest_second={}, violations=[], timeline=timeline,
                     workdir=Path("/tmp/demo"), fencing=fencing)


def test_the_row_sums_the_fencing_figures_over_the_runs() -> None:
    runs = [result(FencingFigures(accepted=100, rejected=7, late=2, unfenced=1), 1),
            result(FencingFigures(accepted=50, rejected=0, late=1, unfenced=2), 2)]
    row = ScenarioSummary("demo", 1, "t", "d", runs).row()
    assert row["fencing"] == {"accepted": 150, "rejected": 7, "late": 3, "unfenced": 3,
                              "stale_accepted": 0}
    assert row["per_run"][0]["fencing"]["rejected"] == 7
    assert ScenarioSummary("demo", 1, "t", "d", [result(None)]).row()["fencing"] is None


def test_the_table_shows_writes_fenced_late_unfenced_and_stale_before_the_result() -> None:
    runs = [result(FencingFigures(accepted=100, rejected=7, late=2, unfenced=4,
                                  stale_accepted=[STALE]))]
    header, _, line = table([ScenarioSummary("demo", 1, "t", "d", runs)]).splitlines()[:3]
    assert header.split()[-6:] == ["writes", "fenced", "late", "unfenced", "stale", "result"]
    assert line.split()[-6:-1] == ["100", "7", "2", "4", "1"]


def test_a_run_whose_writes_were_not_judged_shows_dashes() -> None:
    line = table([ScenarioSummary("demo", 1, "t", "d", [result(None)])]).splitlines()[2]
    assert line.split()[-6:-1] == ["-", "-", "-", "-", "-"]


def cluster(fencing: FencingFigures | None, writer_problems: list[str] | None = None) -> Any:
    timeline = Timeline(lanes=[], owners={}, origin=0.0)
    return SimpleNamespace(fencing=fencing, writer_problems=writer_problems or [],
                           timeline=timeline)


def test_a_stale_write_accepted_fails_the_run() -> None:
    (violation,) = fenced_writes_violations(cluster(FencingFigures(accepted=5,
                                                              stale_accepted=[STALE])))
    assert violation.startswith("fencing: 1 stale write(s) accepted")


def test_no_write_at_all_a_crashed_writer_or_no_judgement_fail_the_run() -> None:
    assert fenced_writes_violations(cluster(FencingFigures(accepted=0))) == [
        "fencing: no write was accepted in the whole run"]
    assert fenced_writes_violations(cluster(FencingFigures(accepted=3), ["w exited"])) == [
        "w exited"]
    assert fenced_writes_violations(cluster(None)) == ["fencing: the writes were not judged"]
    assert fenced_writes_violations(cluster(FencingFigures(accepted=3, rejected=9))) == []
