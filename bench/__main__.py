"""`python -m bench [--quick] [--runs N] [--json out/bench.json] [--only SCENARIO ...]`

Runs every scenario for consul-leader and for the shell loop baseline, prints one table with
the ratios and the budgets, and writes everything (raw samples included) as JSON. Progress
goes to stderr, the table to stdout. A scenario that fails is noted (DID NOT FINISH) and the
others still run. Exit status 0 once the table is printed (1 with `--strict` when a budget
was missed or a scenario did not finish), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.fleet import Kind
from bench.results import Env, Results
from bench.scenarios import failover, scale, steady, step_down
from bench.settings import Plan, Timings

Scenario = Callable[[Env, Results], None]


def _both(run: Callable[[Env, Kind, int, Results], None], runs: Callable[[Plan], int],
          baseline_runs: Callable[[Plan], int]) -> Scenario:
    def scenario(env: Env, results: Results) -> None:
        run(env, Kind.SIDECAR, runs(env.plan), results)
        run(env, Kind.BASELINE, baseline_runs(env.plan), results)

    return scenario


def _node_loss_lock_delay(env: Env, results: Results) -> None:
    timings = Timings(env.timings.ttl, env.timings.sleep, lock_delay=1.0)
    for kind in Kind:
        failover.node_loss(env, kind, env.plan.lock_delay_runs, results, timings,
                           key="node_loss_lock_delay")


def _scale_contention(env: Env, results: Results) -> None:
    scale.contention(env, Kind.SIDECAR, env.plan.scale_runs, results)
    scale.contention(env, Kind.BASELINE, env.plan.scale_slow_runs, results)


def _scale_groups(env: Env, results: Results) -> None:
    for kind in Kind:
        scale.groups(env, kind, results)


SCENARIOS: dict[str, Scenario] = {
    "steady": steady.load_and_footprint,
    "handover": _both(failover.handover, lambda p: p.runs, lambda p: p.slow_runs),
    "crash": _both(failover.crash, lambda p: p.runs, lambda p: p.slow_runs),
    "node-loss": _both(failover.node_loss, lambda p: p.runs, lambda p: p.runs),
    "node-loss-lock-delay": _node_loss_lock_delay,
    "step-down": _both(step_down.lateness, lambda p: p.runs, lambda p: 1),
    "scale-contention": _scale_contention,
    "scale-groups": _scale_groups,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="few runs, short windows, small scale: a smoke run")
    parser.add_argument("--runs", type=int, help="runs of each fast scenario (default 20; "
                        "quick 3); the baseline's session-expiry scenarios run a fifth, at least 3")
    parser.add_argument("--json", type=Path, default=Path("out/bench.json"),
                        help="where to write the results (default out/bench.json)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"run only these: {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a budget is missed")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = (Plan.quick if args.quick else Plan.full)(**({"runs": args.runs} if args.runs else {}))
    timings = Timings()
    workdir = Path(tempfile.mkdtemp(prefix="consul-leader-bench-"))
    env = Env(workdir, timings, plan)
    results = Results()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    say(f"consul-leader benchmarks ({timings.describe()}); work folder {workdir}")
    durations: dict[str, float] = {}
    failed: list[str] = []
    try:
        for name in args.only or list(SCENARIOS):
            began = time.monotonic()
            say(f"{name} ...")
            try:
                SCENARIOS[name](env, results)
            except Exception as exc:  # the other scenarios' figures still count
                failed.append(name)
                results.notes.append(f"{name}: DID NOT FINISH: {type(exc).__name__}: {exc}")
                say(f"{name} did not finish: {type(exc).__name__}: {str(exc)[:300]}")
            durations[name] = time.monotonic() - began
            say(f"{name} done in {durations[name]:.0f}s")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    # Other work on the machine shifts latencies: say how busy it was.
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    text, verdicts = report.table(results, timings, plan)
    print(f"\nconsul-leader vs the shell loop baseline - {timings.describe()}; "
          f"{platform.machine()}, {_cores()} cores, {load}; {elapsed:.0f}s\n")
    print(text)
    print()
    for line in report.method_notes(timings, plan) + report.notes(results):
        print(f"  * {line}")
    _write_json(args.json, results, timings, plan, verdicts, text, elapsed, durations, load)
    missed = [v for v in verdicts if not v["met"]]
    say(f"JSON written to {args.json}; {len(missed)} budget(s) missed"
        + (f"; scenario(s) that did not finish: {', '.join(failed)}" if failed else ""))
    return 1 if args.strict and (missed or failed) else 0


def _write_json(path: Path, results: Results, timings: Timings, plan: Plan,
                verdicts: list[dict[str, Any]], text: str, elapsed: float,
                durations: dict[str, float], load: str) -> None:
    document = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings": timings.__dict__,
        "plan": plan.__dict__,
        "elapsed_seconds": round(elapsed, 1),
        "scenario_seconds": {name: round(s, 1) for name, s in durations.items()},
        "machine": {"arch": platform.machine(), "cores": _cores(),
                    "python": platform.python_version(), "load": load},
        "figures": report.summary_json(results),
        "two_primaries": [
            {"scenario": scenario, "kind": kind.value, "runs": tally.runs,
             "with_two_primaries": tally.with_two_primaries,
             "overlap_seconds": [round(value, 4) for value in tally.overlap_seconds]}
            for (scenario, kind), tally in results.tallies.items()
        ],
        "budgets": verdicts,
        "details": results.details,
        "notes": report.notes(results),
        "table": text,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _cores() -> int:
    return os.cpu_count() or 0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
