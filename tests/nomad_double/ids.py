"""Nomad's identifiers for what it registers in Consul, and the tests on them.

nomad: client/serviceregistration/id.go (MakeAllocServiceID),
command/agent/consul/service_client.go (MakeCheckID, isNomadService, isNomadCheck,
isNomadAgent, maybeConnectSidecar, maybeSidecarProxyCheck, nonLegacyCheckRe).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .jobspec import Check

NOMAD_SERVICE_PREFIX = "_nomad"
NOMAD_TASK_PREFIX = NOMAD_SERVICE_PREFIX + "-task-"
NOMAD_CHECK_PREFIX = NOMAD_SERVICE_PREFIX + "-check-"
NOMAD_CLIENT_PREFIX = NOMAD_SERVICE_PREFIX + "-client-"
NOMAD_SERVER_PREFIX = NOMAD_SERVICE_PREFIX + "-server-"
SIDECAR_SUFFIX = "-sidecar-proxy"

# nomad: service_client.go (nonLegacyCheckRe): unanchored, like Go's MatchString.
_NON_LEGACY_CHECK = re.compile(r"_nomad-check-[0-9a-f]{64}")
# nomad: service_client.go (sidecarProxyCheckRe)
_SIDECAR_PROXY_CHECK = re.compile(r"^service:_nomad-.+-sidecar-proxy(:[\d]+)?$")


def workload_name(group: str, task: str | None) -> str:
    # nomad: client/serviceregistration/workload.go (WorkloadServices.Name):
    # group services use "group-<group>" where task services use the task name.
    return task if task else f"group-{group}"


def alloc_service_id(alloc_id: str, workload: str, service: str, port_label: str) -> str:
    # nomad: client/serviceregistration/id.go (MakeAllocServiceID)
    return f"{NOMAD_TASK_PREFIX}{alloc_id}-{workload}-{service}-{port_label}"


def check_id(service_id: str, check: Check) -> str:
    """`_nomad-check-<64 hex>`: a SHA-256 over the service ID and the check's definition.

    nomad: service_client.go (MakeCheckID) over nomad/structs/services.go
    (ServiceCheck.Hash). Same shape and same inputs (so the ID changes exactly when
    Nomad's would), not the same bytes: our digest is ours."""
    digest = hashlib.sha256()
    for part in check.hash_fields():
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    digest.update(service_id.encode("utf-8"))
    return NOMAD_CHECK_PREFIX + digest.hexdigest()


def is_nomad_service(service_id: str) -> bool:
    # nomad: service_client.go (isNomadService): task and group services only; agent
    # services (_nomad-client-, _nomad-server-) are never reaped by a client.
    return service_id.startswith(NOMAD_TASK_PREFIX)


def is_nomad_agent(service_id: str) -> bool:
    # nomad: service_client.go (isNomadAgent)
    return service_id.startswith((NOMAD_CLIENT_PREFIX, NOMAD_SERVER_PREFIX))


def is_nomad_check(check_id_: str) -> bool:
    # nomad: service_client.go (isNomadCheck)
    return check_id_.startswith(NOMAD_CHECK_PREFIX)


def is_current_check_format(check_id_: str) -> bool:
    # nomad: service_client.go (nonLegacyCheckRe): legacy (SHA-1) IDs skip probation.
    return _NON_LEGACY_CHECK.search(check_id_) is not None


def maybe_connect_sidecar(service_id: str) -> bool:
    # nomad: service_client.go (maybeConnectSidecar)
    return service_id.endswith(SIDECAR_SUFFIX)


def maybe_sidecar_proxy_check(check_id_: str) -> bool:
    # nomad: service_client.go (maybeSidecarProxyCheck)
    return _SIDECAR_PROXY_CHECK.match(check_id_) is not None
