"""Consul's state as the stand-in holds it, read in-process (no request is counted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClusterView:
    state: dict[str, Any]

    @classmethod
    def of(cls, consul: Any) -> ClusterView:
        return cls(consul.snapshot())

    def holder(self, kv_path: str) -> str | None:
        """The session holding `kv_path`, or None when it is free or missing."""
        for entry in self.state["kv"]:
            if entry["Key"] == kv_path:
                return entry.get("Session") or None
        return None

    def sessions(self) -> set[str]:
        return {session["ID"] for session in self.state["sessions"]}

    def service(self, service_id: str) -> dict[str, Any] | None:
        for node in self.state["nodes"].values():
            if service_id in node["services"]:
                found: dict[str, Any] = node["services"][service_id]
                return found
        return None

    def tags(self, service_id: str) -> list[str]:
        service = self.service(service_id)
        return list(service["Tags"]) if service else []

    def passing(self, service_id: str) -> bool:
        """As `health/service?passing` decides: serfHealth and every service check passing."""
        for node in self.state["nodes"].values():
            if service_id not in node["services"]:
                continue
            checks = [c for c in node["checks"].values() if c["ServiceID"] == service_id]
            return node["serfHealth"] == "passing" and all(
                check["Status"] == "passing" for check in checks
            )
        return False

    def passing_with(self, service_ids: list[str], label: str) -> list[str]:
        """Those of `service_ids` Consul would list as passing and tagged `label`."""
        wanted = label.lower()  # the ?tag= filter ignores case
        return [
            sid for sid in service_ids
            if self.passing(sid) and wanted in (tag.lower() for tag in self.tags(sid))
        ]
