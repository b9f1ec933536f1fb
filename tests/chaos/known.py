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


# DESIGN §7: Nomad undoes what the sidecar writes into the registration Nomad owns.
ROLE_CHECK_DELETED = KnownProblem(
    "issue 11: every periodic Nomad sync finds the sidecar's Meta.session on the Nomad-owned "
    "service, re-registers it with replace-existing-checks and so deletes the sidecar's role "
    "check: the leader is out of ?passing until its next renew round registers the check "
    "again (no passing primary about half the time)")
STALE_PRIMARY = KnownProblem(
    "issue 11: a periodic Nomad sync adopts the leader's primary tag into Nomad's copy and "
    "re-registers the service without the sidecar's role check; once that sidecar is dead, "
    "paused, cut off or demoted, Nomad's copy keeps (or an operation sync puts back) its "
    "instance as a passing primary that no TTL expires: the next leader waits for it to go "
    "(until the old sidecar relabels it) or two primaries are listed")
BOTH_PROBLEMS = KnownProblem(
    f"{ROLE_CHECK_DELETED.reason}; and {STALE_PRIMARY.reason.removeprefix('issue 11: ')}")
# Not Nomad's doing: it fails the same way on Consul alone (the lead's wording, main 0c03001).
REVOKED_TOKEN_KEEPS_ROLE_CHECK = KnownProblem(
    "issue 11: the revoked token cannot sync the old leader's role check to the catalog "
    "(consul agent/local/state.go syncCheck uses the check's own token), so Consul keeps "
    "listing it as a passing primary and the new leader waits for it without limit",
    nomad_undoes_writes=False)
