"""Resident memory and CPU time of a process, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    rss_bytes: int
    cpu_seconds: float  # user + system, this process only (the sidecar starts no children)


def sample(pid: int) -> ProcSample:
    """RSS (VmRSS) and utime+stime of `pid`; raises OSError once it has gone."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    )
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return ProcSample(rss_kb * 1024, (utime + stime) / CLOCK_TICKS)
