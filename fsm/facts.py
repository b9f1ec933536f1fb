"""What an adapter observed along with an event. Pure data, carried by the `Transition`.

One flat record with every field optional: each event fills the fields that describe it
(`session` for all of them once the controller has seen them). The machine itself never looks
inside; the effects read the facts of the transition they carry out, so nothing has to be
fetched from an adapter after the fact.
"""

from dataclasses import dataclass, replace

from consul_leader.fsm.observation import KeyObservation


@dataclass(frozen=True)
class Facts:
    """Observed with one event. Times are on the adapters' monotonic clock."""

    session: str | None = None  # the session the event is about
    valid_until: float | None = None  # the local lease deadline (created, renewed)
    observation: KeyObservation | None = None  # the lock key as read
    fencing_token: int | None = None  # the key's ModifyIndex when we took it
    retry_in: float | None = None  # lock-delay: when to try `?acquire` again
    targets: tuple[str, ...] = ()  # target service IDs (targets_found, target_gone)
    others: tuple[str, ...] = ()  # other instances seen as passing primaries
    check_id: str | None = None  # the check an event is about
    checks: tuple[str, ...] = ()  # checks a new session is to bind to (lease_check_passed)
    # (node, service ID) of other passing primaries whose session no longer exists
    # (stale_primary_seen, other_primary_wait_over): provably stale, so they may be evicted
    # from the catalog.
    stale_primaries: tuple[tuple[str, str], ...] = ()
    # Switchover (issue 12).
    hold_off: float | None = None  # seconds the old leader stays out (switchover_requested)
    target: str | None = None  # the instance named to lead next, if any

    def with_session(self, session: str | None) -> "Facts":
        """These facts, about `session` (when they name none themselves)."""
        return self if self.session is not None else replace(self, session=session)


NO_FACTS = Facts()
