"""Run the chaos suite: print the table, write results.json and one timeline SVG per scenario.

    python -m scripts.chaos [--scenario NAME]... [--runs N] [--soak-minutes M]
                            [--fuzz-examples K] [--seed S] [--out out/chaos] [--ci] [--list]

Without --scenario every scenario runs (the full, on-demand run: 3 runs each where cheap, a
10-minute soak). --ci runs the short subset CI runs, once each. Sidecars run as allocations
of the Nomad model unless a scenario is about Consul alone (--list says which). Exit status 1
when a scenario failed that names no known problem (expected failures, listed under the
table with their reasons, do not fail the run; their violations are printed all the same),
so `make chaos` fails loudly.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from tests.chaos.report import results_json, table
from tests.chaos.suite import (
    CI_FUZZ_EXAMPLES,
    CI_SOAK_MINUTES,
    FULL_FUZZ_EXAMPLES,
    FULL_SOAK_MINUTES,
    Options,
    draw,
    entries,
    entry,
    run_entry,
    settings_json,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME",
                        help="run only this scenario (repeatable); see --list")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per scenario (default 3, or 1 with --ci)")
    parser.add_argument("--soak-minutes", type=float, default=None,
                        help=f"soak length (default {FULL_SOAK_MINUTES:g}, "
                             f"or {CI_SOAK_MINUTES:g} with --ci)")
    parser.add_argument("--fuzz-examples", type=int, default=None,
                        help=f"hypothesis examples (default {FULL_FUZZ_EXAMPLES}, "
                             f"or {CI_FUZZ_EXAMPLES} with --ci)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fuzz and the soak")
    parser.add_argument("--out", type=Path, default=Path("out/chaos"))
    parser.add_argument("--ci", action="store_true", help="the short subset CI runs")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def _interrupted(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so every cluster's `with` block stops its processes.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for item in entries():
            flags = f"{'ci' if item.ci else '':2} {'xfail' if item.expected_failure else '':5}"
            print(f"{item.name:36} {item.item:>2} {item.mode:11} {flags} {item.title}")
        return 0
    options = Options(
        runs=args.runs or (1 if args.ci else 3),
        soak_minutes=args.soak_minutes or (CI_SOAK_MINUTES if args.ci else FULL_SOAK_MINUTES),
        fuzz_examples=args.fuzz_examples or (CI_FUZZ_EXAMPLES if args.ci
                                             else FULL_FUZZ_EXAMPLES),
        seed=args.seed,
    )
    try:
        chosen = [entry(name) for name in args.scenario] or [
            e for e in entries() if e.ci or not args.ci]
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summaries = []
    for item in chosen:
        summary = run_entry(item, options, args.out / "work",
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
        draw(summary, args.out / f"{item.name}.svg")
        summaries.append(summary)
    report = results_json(summaries, {
        **settings_json(options),
        "command": "python -m scripts.chaos " + shlex.join(argv if argv is not None
                                                           else sys.argv[1:]),
        "wall_time_s": round(time.monotonic() - started, 1),
    })
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "table.txt").write_text(table(summaries) + "\n")
    print(table(summaries))
    print(f"\nwrote {args.out / 'results.json'} and {len(summaries)} timeline(s) in {args.out}"
          f" ({time.monotonic() - started:.0f}s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
