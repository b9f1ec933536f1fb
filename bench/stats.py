"""Summaries of repeated measurements: median, p95 (nearest rank) and max."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p95: float
    max: float
    min: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        ordered = sorted(samples)
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p95=nearest_rank(ordered, 0.95),
            max=ordered[-1],
            min=ordered[0],
        )


def nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    """The smallest sample with at least `fraction` of the samples at or below it."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
