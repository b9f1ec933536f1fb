"""Known problems of today's sidecar: what makes a scenario an expected failure.

A scenario that a known problem makes fail names it (`Scenario.expected_failure`); the issue
that fixes the problem turns the scenario into a pass (XPASS), and the mark goes then. An
expected failure never hides another failure: it excuses only violations about Consul's view
of the primaries (what these problems cause), and a problem caused by Nomad undoing the
sidecar's writes excuses nothing in a run where Nomad never re-registered a sidecar's
service.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a publishing problem can make a run violate: Consul's view of the primaries. Anything
# else (a crash, a hot loop, two Leaders by /status, fencing, a leader on an ambiguous
# answer, a scenario step that failed) is never excused.
VIEW_VIOLATIONS = ("two passing primaries", "Consul listed", "one live primary only",
                   "no single live primary", "did not settle", "listed as a passing primary",
                   "no other live primary")


@dataclass(frozen=True)
class KnownProblem:
    reason: str  # "issue N: what goes wrong, and why"
    nomad_undoes_writes: bool = True  # caused by Nomad's syncs re-registering the service

    def excuses(self, violation: str, nomad_rewrites: int) -> bool:
        if self.nomad_undoes_writes and nomad_rewrites == 0:
            return False
        return any(kind in violation for kind in VIEW_VIOLATIONS)

    def __str__(self) -> str:
        return self.reason

