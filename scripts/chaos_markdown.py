"""Print a chaos run's results.json as the README's markdown table.

    python -m scripts.chaos_markdown out/chaos/results.json

The README table is this script's output, so it cannot drift from the run it quotes. Columns
a results file does not have (an older run) print as a dash.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def _seconds(key: str) -> Callable[[Row], str]:
    return lambda row: "—" if row.get(key) is None else f"{row[key]:.2f}"


def _pair(first: str, second: str) -> Callable[[Row], str]:
    return lambda row: f"{_seconds(first)(row)} / {_seconds(second)(row)}"


def _share(row: Row) -> str:
    share = row.get("one_primary_share")
    return "—" if share is None else f"{100 * share:.1f} %"


def _name(row: Row) -> str:
    suffix = "" if row.get("mode") == "nomad" else " (Consul only)"
    return f"{row['item']}. {row['name']}{suffix}"


def _fencing(row: Row) -> str:
    fencing = row.get("fencing")
    if not isinstance(fencing, Mapping):
        return "—"
    return (f"{fencing.get('accepted', '—')} / {fencing.get('rejected', '—')} / "
            f"{fencing.get('stale_accepted', '—')}")


FENCING_COLUMN = ("fenced writes accepted / rejected / stale accepted", _fencing)
COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("scenario", _name),
    ("runs", lambda row: str(len(row.get("per_run", ())))),
    ("overlap (s)", _seconds("overlap_s")),
    ("no passing primary (s)", _seconds("no_primary_s")),
    ("exactly one primary", _share),
    ("longest without a leader (s)", _seconds("max_no_leader_s")),
    ("two sidecars claiming (s)", _seconds("double_leader_s")),
    ("detection p50 / p95 (s)", _pair("detection_p50_s", "detection_p95_s")),
    ("recovery max / bound (s)", _pair("recovery_max_s", "bound_s")),
    ("crashes", lambda row: str(row.get("crashes", "—"))),
    ("result", lambda row: str(row.get("outcome", "—"))),
)


def markdown(results: Mapping[str, Any]) -> str:
    scenarios = results["scenarios"]
    columns = list(COLUMNS)
    if any("fencing" in row for row in scenarios):  # runs with the fenced store
        columns.insert(-2, FENCING_COLUMN)
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in scenarios]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos_markdown",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results.json of a chaos run")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"scripts.chaos_markdown: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
