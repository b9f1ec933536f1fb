"""The chaos report: one table (printed and as JSON) and one timeline picture per scenario.

The SVG is written by hand (no plotting library): one lane per sidecar coloured by its state
as /status reported it, one lane for the number of passing primaries Consul listed (amber for
none, red for two or more), one lane of ticks for Nomad's syncs that wrote a sidecar's
service, the faults as shaded bands or vertical lines with their labels, and a time axis.

A scenario's outcome: `ok` (every invariant held), `FAIL`, `xfail` (it failed and names the
known problem that makes it fail, see suite.py), or `XPASS` (it names one, yet held).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from tests.chaos.analysis import percentile
from tests.chaos.known import KnownProblem
from tests.chaos.runner import RunResult
from tests.chaos.timeline import (
    CANDIDATE,
    EXITED,
    FOLLOWER,
    LEADER,
    NO_SESSION,
    UNREACHABLE,
    StatusSample,
    Timeline,
)
from tests.fencing.writer import DEFAULT_PERIOD as WRITE_PERIOD

DEFINITIONS = {
    "overlap": "total time Consul's health view (?tag=<primary>&passing) listed two or more "
               "instances (whole run, worst run)",
    "no primary": "total time, from the first settled instant to the end of the run, during "
                  "which the observer's last answered sample of ?tag=<primary>&passing listed "
                  "no instance; each sample counts from its midpoint to the next sample's, "
                  "unanswered samples count as unobserved (worst run)",
    "1 primary": "share of the observed time in that window with exactly one instance listed "
                 "(worst run)",
    "no leader": "longest stretch in which Consul listed no passing primary whose sidecar "
                 "claimed leadership (/primary 200: Leader, lease unexpired, label published)",
    "2 leaders": "total time two sidecars both claimed leadership by /status (/primary 200); "
                 "tolerated only for a sidecar cut off from Consul while lock-delay < TTL, "
                 "until its own deadline (README)",
    "detection": "per scenario, see its 'detection' text",
    "recovery": "from the fault's start (or end, per scenario) to one live primary again; "
                "checked against the DESIGN §6 bound",
    "crashes": "sidecar processes that exited without being stopped, exited non-zero after "
               "SIGTERM, needed SIGKILL after SIGTERM (unless made deaf on purpose), or had "
               "a thread die of an unforeseen error (even if restarted)",
    "writes": "writes the fenced store accepted from the allocations' writers (each writes "
              f"every {WRITE_PERIOD * 1000:g} ms with the token of its sidecar's leader file "
              "while the file exists; all runs)",
    "fenced": "writes the store rejected (409) because a higher token had been accepted: a "
              "stale leader's writes stopped by fencing (all runs)",
    "late": "accepted writes whose term Consul had already ended (a release of the lock key in "
            "Consul's journal) while nobody else held the key: harmless (all runs)",
    "unfenced": "accepted writes whose term had ended, made while a later term had begun in "
                "Consul but had not yet written: no token can stop those (the store has not "
                "seen the newer one); a lock-delay >= TTL rules them out for a cut-off leader "
                "(all runs)",
    "stale": "stale writes accepted: writes of an ended term accepted after a write of a later "
             "term had been accepted, judged from Consul's journal of the lock key, not from "
             "the store's verdicts; any is a violation, as is a token Consul never gave the "
             "writer's session or a 409 with no higher token accepted before (all runs)",
    "result": "ok: every invariant held; FAIL; xfail: failed, and the scenario names the known "
              "problem that makes today's sidecar fail it (expected failures below); XPASS: "
              "names one, yet held",
}


@dataclass
class ScenarioSummary:
    name: str
    item: int
    title: str
    detection_meaning: str
    results: list[RunResult]
    mode: str = "nomad"  # "nomad" or "consul-only"
    expected_failure: KnownProblem | None = None

    @property
    def detections(self) -> list[float]:
        return [d for r in self.results for d in r.detections]

    @property
    def violations(self) -> list[str]:
        return [f"run {r.run}: {v}" for r in self.results for v in r.violations]

    @property
    def crashes(self) -> int:
        return sum(len(r.crashes) for r in self.results)

    @property
    def ok(self) -> bool:
        return bool(self.results) and not self.violations

    @property
    def outcome(self) -> str:
        if self.expected_failure is None:
            return "ok" if self.ok else "FAIL"
        return "XPASS" if self.ok else "xfail"

    @property
    def unexpected_failure(self) -> bool:
        return not self.ok and self.expected_failure is None

    def fencing_totals(self) -> dict[str, int] | None:
        """The fencing figures summed over the runs (None when no run judged its writes)."""
        judged = [r.fencing.to_json() for r in self.results if r.fencing is not None]
        if not judged:
            return None
        keys = ("accepted", "rejected", "late", "unfenced", "stale_accepted")
        return {key: sum(f[key] for f in judged) for key in keys}

    @property
    def worst(self) -> RunResult:
        """The run to draw: most violations, then longest time without a leader."""
        return max(self.results, key=lambda r: (len(r.violations), r.max_no_leader))

    def row(self) -> dict[str, Any]:
        recoveries = [r.recovery for r in self.results if r.recovery is not None]
        bounds = {r.bound for r in self.results}
        return {
            "name": self.name,
            "item": self.item,
            "title": self.title,
            "detection": self.detection_meaning,
            "mode": self.mode,
            "runs": len(self.results),
            "overlap_s": _r(max((r.overlap for r in self.results), default=0.0)),
            "no_primary_s": _r(max((r.view.none for r in self.results), default=0.0)),
            "one_primary_share": _share(self.results),
            "max_no_leader_s": _r(max((r.max_no_leader for r in self.results), default=0.0)),
            "double_leader_s": _r(max((r.double_leader for r in self.results), default=0.0)),
            "detection_p50_s": _r(percentile(self.detections, 0.50)),
            "detection_p95_s": _r(percentile(self.detections, 0.95)),
            "crashes": self.crashes,
            "recovery_max_s": _r(max(recoveries, default=None)),
            "bound_s": bounds.pop() if len(bounds) == 1 else None,
            "leader_changes": sum(r.leader_changes for r in self.results),
            "fencing": self.fencing_totals(),
            "ok": self.ok,
            "outcome": self.outcome,
            "expected_failure": None if self.expected_failure is None
            else self.expected_failure.reason,
            "violations": self.violations,
            "per_run": [r.to_json() for r in self.results],
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _share(results: Sequence[RunResult]) -> float | None:
    """The worst run's share of observed time with exactly one passing primary."""
    shares = [r.view.one_share for r in results if r.view.one_share is not None]
    return round(min(shares), 4) if shares else None


# -- the table -------------------------------------------------------------------------------

COLUMNS = (
    ("scenario", "name", "<"),
    ("runs", "runs", ">"),
    ("overlap s", "overlap_s", ">"),
    ("no primary s", "no_primary_s", ">"),
    ("1 primary", "one_primary_share", ">"),
    ("no leader s", "max_no_leader_s", ">"),
    ("2 leaders s", "double_leader_s", ">"),
    ("detect p50", "detection_p50_s", ">"),
    ("detect p95", "detection_p95_s", ">"),
    ("crashes", "crashes", ">"),
    ("recovery s", "recovery_max_s", ">"),
    ("bound s", "bound_s", ">"),
    ("writes", "fencing.accepted", ">"),
    ("fenced", "fencing.rejected", ">"),
    ("late", "fencing.late", ">"),
    ("unfenced", "fencing.unfenced", ">"),
    ("stale", "fencing.stale_accepted", ">"),
    ("result", "outcome", "<"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "one_primary_share":
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _field(row: dict[str, Any], key: str) -> Any:
    """`key` of the row; `a.b` is b of the mapping a (None when a is None)."""
    outer, _, inner = key.partition(".")
    value = row[outer]
    return value if not inner or value is None else value[inner]


def table(summaries: Sequence[ScenarioSummary]) -> str:
    rows = [{key: _cell(key, _field(row, key)) for _, key, _ in COLUMNS}
            for row in (s.row() for s in summaries)]
    widths = {key: max([len(title), *(len(r[key]) for r in rows)]) for title, key, _ in COLUMNS}
    header = "  ".join(f"{title:{align}{widths[key]}}" for title, key, align in COLUMNS)
    lines = [header, "-" * len(header)]
    lines += ["  ".join(f"{r[key]:{align}{widths[key]}}" for _, key, align in COLUMNS)
              for r in rows]
    lines.append("")
    lines += [f"{name}: {meaning}" for name, meaning in DEFINITIONS.items()]
    by_meaning: dict[str, list[str]] = {}
    for summary in summaries:
        by_meaning.setdefault(summary.detection_meaning, []).append(summary.name)
    lines += [f"detection = {meaning} ({', '.join(names)})"
              for meaning, names in by_meaning.items()]
    consul_only = [s.name for s in summaries if s.mode != "nomad"]
    if consul_only:
        lines.append(f"Consul only (no Nomad in the loop): {', '.join(consul_only)}")
    expected = [(s.name, s.expected_failure.reason) for s in summaries if s.expected_failure]
    if expected:
        lines.append("")
        lines.append("expected failures (known problems, named by the issue that fixes them):")
        lines += [f"  {name}: {reason}" for name, reason in expected]
    failures = [(s.name, v) for s in summaries for v in s.violations]
    if failures:
        lines.append("")
        lines.append("violations:")
        lines += [f"  {name}: {violation.splitlines()[0]}" for name, violation in failures]
    return "\n".join(lines)


def results_json(summaries: Sequence[ScenarioSummary], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": settings,
        "definitions": DEFINITIONS,
        # ok: no scenario failed unexpectedly (expected failures are listed, not hidden)
        "ok": not any(s.unexpected_failure for s in summaries),
        "all_held": all(s.ok for s in summaries),
        "unexpected_failures": [s.name for s in summaries if s.unexpected_failure],
        "expected_failures": [s.name for s in summaries if s.outcome == "xfail"],
        "unexpected_passes": [s.name for s in summaries if s.outcome == "XPASS"],
        "scenarios": [s.row() for s in summaries],
    }


# -- the timeline picture ----------------------------------------------------------------------

STATE_COLOURS = {
    LEADER: "#2e7d32",
    "Leader, not published": "#81c784",
    "Leader, lease expired": "#c0ca33",
    FOLLOWER: "#1e88e5",
    CANDIDATE: "#fbc02d",
    NO_SESSION: "#9e9e9e",
    UNREACHABLE: "#37474f",
    EXITED: "#ffffff",
}
UNKNOWN_COLOUR = "#eeeeee"
PRIMARY_COLOURS = {0: "#ffb300", 1: "#2e7d32"}  # amber: no passing primary
SYNC_COLOURS = {"Nomad periodic sync": "#3949ab", "Nomad operations sync": "#8e24aa"}
OTHER_EVENT_COLOUR = "#757575"
OVERLAP_COLOUR = "#d32f2f"
NO_ANSWER_COLOUR = "#bdbdbd"
FAULT_COLOUR = "#c62828"

LEFT, RIGHT, TOP = 170, 30, 76
MAX_LABEL = 60  # characters of a fault's label drawn (fuzzed mutations can be long)
LANE, GAP, LABEL_ROW = 22, 6, 15


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    key: str
    text: str = ""


def _lane_key(sample: StatusSample) -> str:
    if sample.state == LEADER and not (sample.lease_remaining or 0) > 0:
        return "Leader, lease expired"
    if sample.state == LEADER and not sample.published:
        return "Leader, not published"
    return sample.state if sample.state in STATE_COLOURS else "unknown"


def lane_segments(timeline: Timeline, lane: str, end: float) -> list[Segment]:
    samples = timeline.lane_sorted(lane)
    return list(_merged(((s.sent, _lane_key(s), "") for s in samples), end))


def consul_segments(timeline: Timeline, end: float) -> list[Segment]:
    def key(primaries: tuple[str, ...] | None) -> tuple[str, str]:
        if primaries is None:
            return "none", ""
        count = len(primaries)
        names = ",".join(timeline.lane_of(p) or "?" for p in primaries)
        return ("2" if count >= 2 else str(count)), (names if count else "")

    return list(_merged(((s.sent, *key(s.primaries)) for s in timeline.health_sorted()), end))


def _merged(points: Iterator[tuple[float, str, str]] | Any, end: float) -> Iterator[Segment]:
    current: tuple[float, str, str] | None = None
    for at, key, text in points:
        if current is None or (key, text) != current[1:]:
            if current is not None:
                yield Segment(current[0], at, current[1], current[2])
            current = (at, key, text)
    if current is not None and current[0] < end:
        yield Segment(current[0], end, current[1], current[2])


def timeline_svg(result: RunResult, title: str) -> str:
    timeline = result.timeline
    start, end = timeline.origin, timeline.finished_at
    duration = max(end - start, 1.0)
    plot = min(2400.0, max(820.0, duration * 80))
    scale = plot / duration

    def x(t: float) -> float:
        return LEFT + (t - start) * scale

    fault_rows = _fault_label_rows(timeline, x)
    lanes_top = TOP + LABEL_ROW * (max(fault_rows.values(), default=-1) + 1) + 8
    lane_names = [*timeline.lanes, "consul", *(["nomad"] if timeline.events else [])]
    lanes_bottom = lanes_top + len(lane_names) * (LANE + GAP)
    height = lanes_bottom + 110
    texts = [title, *_subtitle(result)]
    width = max(LEFT + plot + RIGHT, max(len(t) for t in texts) * 7.5 + 20)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        _hatch_pattern(),
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{_xml_text(title)}</text>',
        *(f'<text x="10" y="{38 + 17 * i}">{_xml_text(line)}</text>'
          for i, line in enumerate(_subtitle(result))),
    ]
    for index, lane in enumerate(timeline.lanes):
        y = lanes_top + index * (LANE + GAP)
        out.append(_label(y, timeline.lane_labels.get(lane, lane)))
        out += [_rect(x(s.start), y, x(s.end), STATE_COLOURS.get(s.key, UNKNOWN_COLOUR))
                for s in lane_segments(timeline, lane, end)]
    y = lanes_top + len(timeline.lanes) * (LANE + GAP)
    out.append(_label(y, "Consul: passing primaries"))
    for segment in consul_segments(timeline, end):
        out.append(_rect(x(segment.start), y, x(segment.end), _primary_colour(segment.key)))
        if segment.text and x(segment.end) - x(segment.start) > 8 * len(segment.text):
            out.append(f'<text x="{x(segment.start) + 3:.1f}" y="{y + 15}" fill="#ffffff">'
                       f'{_xml_text(segment.text)}</text>')
    if timeline.events:
        out += _events(timeline, x, y + LANE + GAP)
    out += _faults(timeline, x, fault_rows, lanes_top, lanes_bottom)
    out += _axis(start, end, x, lanes_bottom)
    out += _legend(lanes_bottom + 48, width)
    out.append("</svg>")
    return "\n".join(out)


def _subtitle(result: RunResult) -> list[str]:
    detections = result.detections
    detection = "-" if not detections else (
        f"{detections[0]:.2f}s" if len(detections) == 1
        else f"p50 {percentile(detections, 0.5):.2f}s, max {max(detections):.2f}s")
    recovery = "-" if result.recovery is None else f"{result.recovery:.2f}s"
    bound = "" if result.bound is None else f" (bound {result.bound:g}s)"
    verdict = "invariants held" if result.ok else (
        f"{len(result.violations)} violation(s), first: "
        + result.violations[0].splitlines()[0][:160])
    share = result.view.one_share
    one = "-" if share is None else f"{100 * share:.1f}%"
    return [f"run {result.run}: overlap {result.overlap:.2f}s, no passing primary "
            f"{result.view.none:.2f}s (exactly one {one} of the time), longest without a "
            f"leader {result.max_no_leader:.2f}s, detection {detection}, recovery "
            f"{recovery}{bound}", verdict]


def _events(timeline: Timeline, x: Any, y: float) -> list[str]:
    """One tick per event (a Nomad sync that wrote services), its lanes written beside it
    when there is room; the full text as a tooltip."""
    out = [_label(y, "Nomad: syncs that wrote")]
    last_text_end = float("-inf")
    for event in sorted(timeline.events, key=lambda e: e.at):
        colour = SYNC_COLOURS.get(event.label, OTHER_EVENT_COLOUR)
        left = x(event.at)
        tip = f"{event.label}: {event.detail} {', '.join(event.lanes)}"
        out.append(f'<rect x="{left - 0.75:.2f}" y="{y}" width="1.5" height="{LANE}" '
                   f'fill="{colour}"><title>{_xml_text(tip)}</title></rect>')
        short = ",".join(event.lanes)
        if left > last_text_end:
            out.append(f'<text x="{left + 2:.2f}" y="{y + 15}" font-size="10" '
                       f'fill="{colour}">{_xml_text(short)}</text>')
            last_text_end = left + 2 + 6 * len(short)
    return out


def _label(y: float, text: str) -> str:
    return f'<text x="10" y="{y + 15}">{_xml_text(text)}</text>'


def _rect(x0: float, y: float, x1: float, colour: str) -> str:
    stroke = ' stroke="#9e9e9e" stroke-width="0.5"' if colour == "#ffffff" else ""
    fill = "url(#hatch)" if colour == NO_ANSWER_COLOUR else colour
    return (f'<rect x="{x0:.2f}" y="{y}" width="{max(x1 - x0, 0.4):.2f}" height="{LANE}" '
            f'fill="{fill}"{stroke}/>')


def _primary_colour(key: str) -> str:
    if key == "none":
        return NO_ANSWER_COLOUR
    return PRIMARY_COLOURS.get(int(key), OVERLAP_COLOUR)


def _hatch_pattern() -> str:
    return ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#9e9e9e" stroke-width="2"/>'
            '</pattern></defs>')


def _fault_label_rows(timeline: Timeline, x: Any) -> dict[int, int]:
    """Row of each fault's label (by id of the fault): the first row where it does not run
    into an earlier label."""
    row_ends: list[float] = []
    rows: dict[int, int] = {}
    for fault in sorted(timeline.faults, key=lambda f: f.start):
        left = x(fault.start)
        right = left + 7 * len(_fault_text(fault.label, fault.target)) + 10
        row = next((r for r, taken in enumerate(row_ends) if taken < left), len(row_ends))
        if row == len(row_ends):
            row_ends.append(right)
        row_ends[row] = right
        rows[id(fault)] = row
    return rows


def _fault_text(label: str, target: str | None) -> str:
    short = label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 3] + "..."
    return f"{short} ({target})" if target else short


def _xml_text(text: str) -> str:
    """Escaped, without the control characters XML forbids (fuzzed labels may carry them)."""
    return escape("".join(ch for ch in text if ch >= " " or ch in "\t\n"))


def _faults(timeline: Timeline, x: Any, rows: dict[int, int], top: float,
            bottom: float) -> list[str]:
    out = []
    for fault in sorted(timeline.faults, key=lambda f: f.start):
        row = rows[id(fault)]
        label_y = TOP + LABEL_ROW * row + 11
        x0 = x(fault.start)
        if fault.end is not None:
            span = max(x(fault.end) - x0, 1)
            out.append(f'<rect x="{x0:.2f}" y="{top - 4}" width="{span:.2f}" '
                       f'height="{bottom - top + 4}" fill="{FAULT_COLOUR}" fill-opacity="0.15"/>')
            out.append(f'<rect x="{x0:.2f}" y="{label_y + 2}" width="{span:.2f}" height="3" '
                       f'fill="{FAULT_COLOUR}"/>')
        out.append(f'<line x1="{x0:.2f}" y1="{label_y + 3}" x2="{x0:.2f}" y2="{bottom}" '
                   f'stroke="{FAULT_COLOUR}" stroke-width="1.5" stroke-dasharray="4,2"/>')
        out.append(f'<text x="{x0 + 3:.2f}" y="{label_y}" fill="{FAULT_COLOUR}">'
                   f'{_xml_text(_fault_text(fault.label, fault.target))}</text>')
    return out


def _axis(start: float, end: float, x: Any, y: float) -> list[str]:
    step = _tick_step(end - start)
    out = [f'<line x1="{x(start):.2f}" y1="{y}" x2="{x(end):.2f}" y2="{y}" stroke="#000000"/>']
    for i in range(int((end - start) / step) + 1):
        t = start + i * step
        out.append(f'<line x1="{x(t):.2f}" y1="{y}" x2="{x(t):.2f}" y2="{y + 5}" '
                   f'stroke="#000000"/>')
        out.append(f'<text x="{x(t):.2f}" y="{y + 18}" text-anchor="middle">'
                   f'{i * step:g}s</text>')
    out.append(f'<text x="{x(start):.2f}" y="{y + 34}" fill="#555555">seconds since the '
               f'observer started</text>')
    return out


def _tick_step(duration: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300):
        if duration / step <= 25:
            return float(step)
    return float(math.ceil(duration / 25 / 60) * 60)


def _legend(y: float, width: float) -> list[str]:
    items = [*STATE_COLOURS.items(), ("Consul: no primary", PRIMARY_COLOURS[0]),
             ("Consul: 1", PRIMARY_COLOURS[1]), ("Consul: 2+", OVERLAP_COLOUR),
             ("Consul: no answer", NO_ANSWER_COLOUR), ("fault", FAULT_COLOUR),
             *((name.removeprefix("Nomad "), colour) for name, colour in SYNC_COLOURS.items())]
    out, cursor = [], 10.0
    for name, colour in items:
        if cursor + 30 + 7 * len(name) > width:
            cursor, y = 10.0, y + 22
        fill = "url(#hatch)" if colour == NO_ANSWER_COLOUR else colour
        out.append(f'<rect x="{cursor:.0f}" y="{y}" width="14" height="14" fill="{fill}" '
                   f'stroke="#9e9e9e" stroke-width="0.5"/>')
        out.append(f'<text x="{cursor + 18:.0f}" y="{y + 12}">{_xml_text(name)}</text>')
        cursor += 30 + 7 * len(name)
    return out
