"""How the instances of one election describe themselves to each other in Consul. Pure.

Each sidecar's own registration (`consul-leader-<alloc>-<target>`, adapters/publishing) carries
in its Meta the instance name (the allocation ID under Nomad) and its priority
(CONSUL_LEADER_PRIORITY). Peers read them from `health/service/<published name>`: a candidate to
know whether healthy peers of higher priority should go first, a leader asked to switch over to
know whether anyone can take over and whom `?to=` names. Instances without these Meta keys
(Nomad's own task services, sidecars before issue 12) are not peers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consul_leader.adapters.consul.port import HealthEntry

META_INSTANCE = "instance"
META_PRIORITY = "priority"
META_ALLOC = "alloc"
DEFAULT_PRIORITY = 1  # what a peer that does not say is taken to have


@dataclass(frozen=True)
class Peer:
    service_id: str
    instance: str
    alloc: str | None
    priority: int
    passing: bool

    @property
    def may_lead(self) -> bool:
        """Healthy and allowed to lead (priority 0 never leads)."""
        return self.passing and self.priority > 0

    def named(self, name: str) -> bool:
        """Whether `name` is this peer's instance, allocation or service ID."""
        return name in (self.instance, self.alloc, self.service_id)


def peers_of(entries: Iterable[HealthEntry], me: str) -> list[Peer]:
    """The other instances of the election among `entries` (never `me`)."""
    found = []
    for entry in entries:
        instance = entry.meta.get(META_INSTANCE)
        if not instance or instance == me:
            continue
        found.append(Peer(entry.service_id, instance, entry.meta.get(META_ALLOC),
                          _priority(entry.meta.get(META_PRIORITY)), entry.passing))
    return found


def higher_priority(peers: Iterable[Peer], priority: int, away: str | None = None) -> list[str]:
    """Instances that may lead and outrank `priority`, but for `away` (one holding off)."""
    return sorted({p.instance for p in peers
                   if p.may_lead and p.priority > priority and p.instance != away})


def _priority(text: str | None) -> int:
    if text is None or not text.isdigit():
        return DEFAULT_PRIORITY
    return int(text)
