"""What a benchmark run uses: the election timings and the plan (run counts, windows, scale).

Timings keep the production ratio with short absolute values so 20 runs fit: the seed's
defaults are TTL 15s and SLEEP 10 (ratio 1.5); the benchmarks use TTL 3s and SLEEP 2, and the
seed's default lock-delay of 0s. Both the sidecar and the baseline get exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    ttl: float = 3.0
    sleep: float = 2.0
    lock_delay: float = 0.0

    @property
    def ttl_text(self) -> str:
        return f"{self.ttl:g}s"

    @property
    def sleep_text(self) -> str:
        return f"{self.sleep:g}"

    @property
    def lock_delay_text(self) -> str:
        return f"{self.lock_delay:g}s"

    def describe(self) -> str:
        return f"TTL {self.ttl_text}, SLEEP {self.sleep_text}, lock-delay {self.lock_delay_text}"


@dataclass(frozen=True)
class Plan:
    """How much to measure. `full()` is what `make bench` runs; `quick()` is a smoke run."""

    runs: int  # runs of every scenario that is fast for both
    slow_runs: int  # runs of the baseline's scenarios that wait for Consul to expire a session
    steady_window: float  # seconds of steady state for Consul load and footprint
    scale_contenders: int  # sidecars contending for one key
    scale_groups: int  # groups of two sidecars (scale_groups * 2 processes)
    scale_nodes: int  # stand-in nodes the scale fleets are spread over
    scale_runs: int  # handovers measured among the contenders
    scale_slow_runs: int  # the same for the baseline (each waits for a session expiry)
    scale_window: float  # seconds of steady state at scale
    stagger: float  # seconds between two process starts at scale
    lock_delay_runs: int  # node-loss runs with a 1 s lock-delay (0: skipped)

    @classmethod
    def full(cls, runs: int = 20) -> Plan:
        return cls(
            runs=runs,
            slow_runs=max(3, runs // 5),
            steady_window=30.0,
            scale_contenders=50,
            scale_groups=50,
            scale_nodes=10,
            scale_runs=4,
            scale_slow_runs=2,
            scale_window=10.0,
            stagger=0.1,
            lock_delay_runs=max(3, runs // 4),
        )

    @classmethod
    def quick(cls, runs: int = 3) -> Plan:
        return cls(
            runs=runs,
            slow_runs=1,
            steady_window=10.0,
            scale_contenders=10,
            scale_groups=5,
            scale_nodes=5,
            scale_runs=2,
            scale_slow_runs=1,
            scale_window=8.0,
            stagger=0.05,
            lock_delay_runs=1,
        )
