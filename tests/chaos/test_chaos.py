"""The chaos suite as tests: each scenario must keep every invariant.

By default (and in CI) only the scenarios marked for CI run, once each, with a short fuzz and
a one-minute soak; `-m chaos_full` runs every scenario, a longer fuzz and a soak of
$CHAOS_SOAK_MINUTES (default 10). A failure names every violated invariant and where the
timeline picture and the sidecars' logs of the run are.

A scenario that today's sidecar is known to fail (`expected_failure`, a known.py problem
naming the issue that fixes it) is `xfail(strict=False)`: it xfails when its problem excuses
every violation, fails like any other test when one is not excused (another kind than
Consul's view of the primaries, or a Nomad problem in a run Nomad never rewrote: see
known.py), and passes (XPASS) once fixed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.report import ScenarioSummary
from tests.chaos.runner import RunResult
from tests.chaos.suite import (
    CI_FUZZ_EXAMPLES,
    CI_SOAK_MINUTES,
    FULL_FUZZ_EXAMPLES,
    FULL_SOAK_MINUTES,
    Entry,
    Options,
    draw,
    entries,
    run_entry,
    unexcused_violations,
)

pytestmark = pytest.mark.slow


class ExpectedProblem(AssertionError):
    """The run failed only in the ways its expected failure names."""


def _marks(item: Entry, *extra: pytest.MarkDecorator) -> list[pytest.MarkDecorator]:
    marks = list(extra)
    if item.expected_failure:
        marks.append(pytest.mark.xfail(strict=False, reason=item.expected_failure.reason,
                                       raises=ExpectedProblem))
    return marks


def _param(item: Entry, options: Options) -> Any:
    marks = _marks(item, pytest.mark.chaos_full, *([pytest.mark.chaos_ci] if item.ci else []))
    return pytest.param(item, options, marks=marks, id=item.name)


def _scenarios() -> list[Any]:
    return [_param(e, Options()) for e in entries() if e.repeatable]


def _long_runs() -> list[Any]:
    """The fuzz and the soak, short for CI and long on demand (ids say which)."""
    soak_minutes = float(os.environ.get("CHAOS_SOAK_MINUTES", FULL_SOAK_MINUTES))
    short = Options(soak_minutes=CI_SOAK_MINUTES, fuzz_examples=CI_FUZZ_EXAMPLES)
    long = Options(soak_minutes=soak_minutes, fuzz_examples=FULL_FUZZ_EXAMPLES)
    params = []
    for item in (e for e in entries() if not e.repeatable):
        params.append(pytest.param(item, short, marks=_marks(item, pytest.mark.chaos_ci),
                                   id=f"{item.name}-short"))
        params.append(pytest.param(item, long, marks=_marks(item, pytest.mark.chaos_full),
                                   id=f"{item.name}-long"))
    return params


@pytest.mark.parametrize(("item", "options"), _scenarios())
def test_scenario_holds_the_invariants(item: Entry, options: Options, tmp_path: Path) -> None:
    judge(run_entry(item, options, tmp_path), tmp_path)


@pytest.mark.parametrize(("item", "options"), _long_runs())
def test_long_run_holds_the_invariants(item: Entry, options: Options, tmp_path: Path) -> None:
    judge(run_entry(item, options, tmp_path), tmp_path)


def judge(summary: ScenarioSummary, tmp_path: Path) -> None:
    if summary.ok:
        return
    message = explain(summary, draw(summary, tmp_path / f"{summary.name}.svg"))
    unexcused = unexcused_violations(summary)
    if unexcused:
        raise AssertionError(message + "\nnot covered by an expected failure:\n"
                             + "\n".join(f"  - {v.splitlines()[0]}" for v in unexcused))
    raise ExpectedProblem(f"{summary.expected_failure}\n{message}")


def explain(summary: ScenarioSummary, picture: Path) -> str:
    lines = [f"{summary.name}: {len(summary.violations)} violation(s)"]
    lines += [f"  - {v.splitlines()[0]}" for v in summary.violations]
    lines += [f"timeline: {picture}"]
    lines += [f"logs: {result.workdir}" for result in summary.results]
    lines += [_tail(result) for result in summary.results if not result.ok]
    return "\n".join(lines)


def _tail(result: RunResult) -> str:
    parts = []
    for lane, paths in result.log_paths.items():
        interesting = [line for path in paths if path.exists()
                       for line in path.read_text(errors="replace").splitlines()
                       if "level=debug" not in line][-12:]
        parts.append(f"===== {lane}\n" + "\n".join(line[:300] for line in interesting))
    return "\n".join(parts)
