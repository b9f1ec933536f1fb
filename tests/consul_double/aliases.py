"""What an alias check concludes from the checks it aliases (consul-semantics-addendum.md §9).

The rule is Consul's `CheckAlias.processChecks` (consul: agent/checks/alias.go), written
afresh: walk the candidate checks; a check of another service is skipped; a node-level
check (no ServiceID) always counts; a critical check ends the walk, a warning is kept
unless something critical follows; when no check of the aliased service was seen and the
service itself does not exist, the alias is critical. Consul walks a Go map, so the check
named in the output when several fail depends on its random order; here the caller's
order (sorted by check ID) decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .durations import go_quote
from .model import CRITICAL, PASSING, WARNING

NO_CHECKS = "No checks found."
ALL_PASSING = "All checks passing."
REMOTE_FAILURE = "Failure checking aliased node or service: "


@dataclass(frozen=True)
class AliasedCheck:
    """One check as the alias sees it: the agent's copy (local) or the catalog's (remote)."""

    node: str
    name: str
    status: str
    output: str
    service_id: str


def alias_verdict(
    alias_node: str,
    alias_service: str,
    checks: Iterable[AliasedCheck],
    service_exists: Callable[[], bool],
) -> tuple[str, str]:
    """(status, output) of the alias check; consul: agent/checks/alias.go (processChecks)."""
    health, output, service_found = PASSING, NO_CHECKS, False
    for check in checks:
        if alias_node and check.node.lower() != alias_node.lower():
            continue  # strings.EqualFold(c.Node, chk.Node)
        matches_service = check.service_id == alias_service
        if check.service_id and not matches_service:
            continue
        service_found = service_found or matches_service
        if check.status in (CRITICAL, WARNING):
            health = check.status
            output = f"Aliased check {go_quote(check.name)} failing: {check.output}"
            if check.status == CRITICAL:
                break
        elif health == PASSING:
            output = ALL_PASSING
    if not service_found and not service_exists():
        return CRITICAL, f"Service {alias_service} could not be found on node {alias_node}"
    return health, output
