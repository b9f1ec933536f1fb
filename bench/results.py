"""Measured figures, keyed by what was measured and for which kind of instance."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import Kind
from bench.settings import Plan, Timings
from bench.stats import Summary


@dataclass
class Figure:
    """Repeated measurements of one quantity for one kind (a single value is one sample)."""

    key: str
    kind: Kind
    unit: str
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    never: bool = False  # the event measured never happens for this kind
    attempts: int = 0  # runs tried; runs that timed out are attempts without a sample

    def add(self, value: float) -> None:
        self.attempts += 1
        self.samples.append(value)

    def missed(self, note: str) -> None:
        self.attempts += 1
        self.notes.append(note)

    def summary(self) -> Summary | None:
        return Summary.of(self.samples) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        summary = self.summary()
        return {
            "key": self.key,
            "kind": self.kind.value,
            "unit": self.unit,
            "attempts": self.attempts,
            "samples": [round(value, 6) for value in self.samples],
            "summary": None if summary is None else summary.__dict__,
            "never": self.never,
            "notes": self.notes,
        }


@dataclass
class Tally:
    """Runs of a scenario in which Consul listed two passing primaries at once."""

    runs: int = 0
    with_two_primaries: int = 0
    overlap_seconds: list[float] = field(default_factory=list)  # per run that had any


@dataclass
class Results:
    figures: dict[tuple[str, Kind], Figure] = field(default_factory=dict)
    tallies: dict[tuple[str, Kind], Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # for the JSON only

    def figure(self, key: str, kind: Kind, unit: str) -> Figure:
        found = self.figures.setdefault((key, kind), Figure(key, kind, unit))
        return found

    def get(self, key: str, kind: Kind) -> Figure | None:
        return self.figures.get((key, kind))

    def tally(self, scenario: str, kind: Kind, overlaps: list[tuple[float, float]]) -> None:
        """One run of `scenario`; `overlaps` are the spans with two passing primaries."""
        entry = self.tallies.setdefault((scenario, kind), Tally())
        entry.runs += 1
        if overlaps:
            entry.with_two_primaries += 1
            entry.overlap_seconds.append(sum(end - start for start, end in overlaps))


@dataclass(frozen=True)
class Env:
    """What every scenario needs."""

    workdir: Path
    timings: Timings
    plan: Plan

    def progress(self, text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)
