"""A model of a Nomad client's service registration and allocation lifecycle (draft)."""

from .alloc_runner import Allocation
from .client import AclSettings, NodeConfig, NomadClient, service_identity_rules
from .cluster import NomadDouble
from .compare import SYNC_OPERATIONS, SYNC_PERIODIC, SYNC_SHUTDOWN, different
from .jobs import SIDECAR_COMMAND, STUB_COMMAND, leader_job
from .jobspec import (
    FLAPPING,
    HEALTHY,
    UNHEALTHY,
    WARNING,
    Check,
    Job,
    Lifecycle,
    Migrate,
    RestartPolicy,
    Service,
    Task,
    TaskGroup,
)
from .service_client import ServiceClient, SyncCounters, SyncRecord, SyncSettings
from .task_runner import TaskRunner

__all__ = [
    "FLAPPING", "HEALTHY", "SIDECAR_COMMAND", "STUB_COMMAND", "SYNC_OPERATIONS",
    "SYNC_PERIODIC", "SYNC_SHUTDOWN", "UNHEALTHY", "WARNING", "AclSettings", "Allocation",
    "Check", "Job", "Lifecycle", "Migrate", "NodeConfig", "NomadClient", "NomadDouble",
    "RestartPolicy", "Service", "ServiceClient", "SyncCounters", "SyncRecord",
    "SyncSettings", "Task", "TaskGroup", "TaskRunner", "different", "leader_job",
    "service_identity_rules",
]
