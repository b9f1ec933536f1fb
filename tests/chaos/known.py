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


# Not Nomad's doing: it fails the same way on Consul alone. No sidecar can fix it: nothing of
# a revoked token's can be synced, and a bounded wait must end.
REVOKED_TOKEN_KEEPS_ROLE_CHECK = KnownProblem(
    "the revoked token cannot sync the old leader's role check to the catalog (consul "
    "agent/local/state.go syncCheck uses the check's own token), so Consul keeps listing it "
    "as a passing primary; the new leader waits for it only up to the bound (its role "
    "check's TTL + TTL/10, issue 11) and then publishes over it, so two primaries are listed "
    "until the old sidecar registers its instance again with a valid token",
    nomad_undoes_writes=False)
