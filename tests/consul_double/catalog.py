"""Nodes, the agents' services and checks, and the catalog built from them (§4, §5, §1.6).

Every method is called with the cluster lock held; writes take the caller's Txn.
Guarantees:
* The catalog is the union of the agents' views; an agent change reaches it in
  the same write (anti-entropy's immediate sync, §4.3, §7). A re-register that
  changes nothing takes no index.
* A check stored as critical, or removed, invalidates the sessions bound to it
  (§1.5); serfHealth going critical on node failure does the same (§1.6).
* A TTL check goes critical exactly TTL after its last update, with output
  `TTL expired` (§4.6). Status changes reach the catalog at once; output-only
  changes stay on the agent (the 5m `check_update_interval` sync is not modelled).
* Per-service indexes move whenever an instance, one of its checks, or a node
  check of its node changes, as Consul's `service.<name>` index does (§5).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass

from . import events
from .core import Core, StateError, Txn
from .durations import SECOND, go_quote
from .model import (
    CRITICAL,
    PASSING,
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    SERF_FAILED_OUTPUT,
    CheckRecord,
    NodeRecord,
    ServiceRecord,
)
from .sessions import SessionTable
from .timers import TimerHandle
from .watch import (
    CATALOG_NODES_TOPIC,
    CATALOG_SERVICES_TOPIC,
    CHECKS_TOPIC,
    agent_service_topic,
    node_topic,
    service_topic,
)

NODES_TABLE = "nodes"
SERVICES_TABLE = "services"
CHECKS_TABLE = "checks"
TTL_EXPIRED = "TTL expired"


@dataclass
class CheckSpec:
    """A check from a registration body, after Consul's ID/Name defaults (§4.3, §4.6)."""

    check_id: str
    name: str
    status: str  # "" means: critical for a new check
    notes: str = ""
    service_id: str = ""
    type: str = ""
    ttl_ns: int = 0
    interval: str = ""
    timeout: str = ""


class CatalogTable:
    def __init__(self, core: Core, nodes: dict[str, NodeRecord], sessions: SessionTable) -> None:
        self._core = core
        self._nodes = nodes
        self._sessions = sessions
        self._service_indexes: dict[str, int] = {}

    # -- reads ---------------------------------------------------------------

    def node(self, name: str) -> NodeRecord | None:
        return self._nodes.get(name)

    def nodes(self) -> list[NodeRecord]:
        return [self._nodes[name] for name in sorted(self._nodes)]

    def table_index(self, *tables: str) -> int:
        return self._core.table_index(*tables)

    def service_index(self, name: str) -> int:
        """§5: the `service.<name>` index; the services table index for unknown names."""
        index = self._service_indexes.get(name)
        if index is None:
            return self._core.table_index(NODES_TABLE, SERVICES_TABLE)
        return index

    def service_instances(self, name: str) -> list[tuple[NodeRecord, ServiceRecord]]:
        return [
            (node, node.services[service_id])
            for node in self.nodes()
            for service_id in sorted(node.services)
            if node.services[service_id].name == name
        ]

    def service_tags(self) -> dict[str, list[str]]:
        """`/v1/catalog/services`: every service name with the union of its tags."""
        tags: dict[str, set[str]] = {}
        for node in self._nodes.values():
            for service in node.services.values():
                tags.setdefault(service.name, set()).update(service.tags)
        return {name: sorted(tags[name]) for name in sorted(tags)}

    @staticmethod
    def instance_checks(node: NodeRecord, service_id: str) -> list[CheckRecord]:
        """Health entry checks: the node's checks (serfHealth too), then the service's."""
        node_checks = sorted(
            (check for check in node.catalog_checks() if not check.service_id),
            key=lambda check: check.check_id,
        )
        service_checks = sorted(
            (check for check in node.checks.values() if check.service_id == service_id),
            key=lambda check: check.check_id,
        )
        return node_checks + service_checks

    # -- nodes ---------------------------------------------------------------

    def add_node(self, txn: Txn, name: str, address: str) -> NodeRecord:
        index = txn.changed(NODES_TABLE, node_topic(name), CATALOG_NODES_TOPIC)
        serf = CheckRecord(
            node=name,
            check_id=SERF_CHECK_ID,
            name=SERF_CHECK_NAME,
            status=PASSING,
            output=SERF_ALIVE_OUTPUT,
            catalog_output=SERF_ALIVE_OUTPUT,
            create_index=index,
            modify_index=index,
        )
        txn.changed(CHECKS_TABLE, CHECKS_TOPIC)
        node = NodeRecord(name, str(uuid.uuid4()), address, serf, create_index=index,
                          modify_index=index)
        self._nodes[name] = node
        return node

    def set_node_alive(self, txn: Txn, name: str, alive: bool) -> None:
        """§1.6: serfHealth follows gossip; going critical invalidates its sessions."""
        node = self._nodes[name]
        output = SERF_ALIVE_OUTPUT if alive else SERF_FAILED_OUTPUT
        serf = dataclasses.replace(
            node.serf_check,
            status=PASSING if alive else CRITICAL,
            output=output,
            catalog_output=output,
        )
        self._store_check(txn, node, serf, keep_status=False)

    # -- services ------------------------------------------------------------

    def register_service(
        self,
        txn: Txn,
        node_name: str,
        service: ServiceRecord,
        checks: list[CheckSpec],
        replace_existing_checks: bool,
    ) -> None:
        """§4.3: replace the definition wholesale; checks keep status; sync at once."""
        node = self._nodes[node_name]
        requested = {spec.check_id for spec in checks}
        if replace_existing_checks:
            for check in self._service_checks(node, service.id):
                if check.check_id not in requested:
                    self._remove_check(txn, node, check)
        self._store_service(txn, node, service)
        for spec in checks:
            self._store_check(
                txn, node, self._check_from_spec(node, spec, service), keep_status=True
            )
        self._refresh_service_fields_of_checks(txn, node, service)

    def deregister_service(self, txn: Txn, node_name: str, service_id: str) -> None:
        """§4.4: remove the service and its checks (which invalidates bound sessions)."""
        node = self._nodes[node_name]
        for check in self._service_checks(node, service_id):
            self._remove_check(txn, node, check)
        service = node.services.pop(service_id)
        index = txn.changed(
            SERVICES_TABLE,
            service_topic(service.name),
            node_topic(node.name),
            agent_service_topic(node.name, service_id),
            CATALOG_SERVICES_TOPIC,
        )
        self._service_indexes[service.name] = index
        self._core.journal.record(
            events.SERVICE_DEREGISTERED, node=node.name, id=service.id, name=service.name,
            tags=list(service.tags),
        )

    # -- checks --------------------------------------------------------------

    def register_check(self, txn: Txn, node_name: str, spec: CheckSpec) -> None:
        """§4.6 `check/register`: a re-registered ID starts over with its new status."""
        node = self._nodes[node_name]
        service = node.services.get(spec.service_id) if spec.service_id else None
        check = self._check_from_spec(node, spec, service)
        self._store_check(txn, node, check, keep_status=False)

    def deregister_check(self, txn: Txn, node_name: str, check_id: str) -> None:
        node = self._nodes[node_name]
        self._remove_check(txn, node, node.checks[check_id])

    def update_ttl_check(
        self, txn: Txn, node_name: str, check_id: str, status: str, output: str
    ) -> None:
        """§4.6 pass/warn/fail/update: set status and output, restart the TTL timer."""
        node = self._nodes[node_name]
        check = node.checks[check_id]
        if check.ttl_ns <= 0:
            raise StateError(f"CheckID {go_quote(check_id)} does not have associated TTL")
        catalog_output = output if status != check.status else check.catalog_output
        updated = dataclasses.replace(
            check, status=status, output=output, catalog_output=catalog_output
        )
        self._store_check(txn, node, updated, keep_status=False)

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _service_checks(node: NodeRecord, service_id: str) -> list[CheckRecord]:
        return [check for check in node.checks.values() if check.service_id == service_id]

    @staticmethod
    def _check_from_spec(
        node: NodeRecord, spec: CheckSpec, service: ServiceRecord | None
    ) -> CheckRecord:
        return CheckRecord(
            node=node.name,
            check_id=spec.check_id,
            name=spec.name,
            status=spec.status or CRITICAL,
            notes=spec.notes,
            service_id=spec.service_id,
            service_name=service.name if service else "",
            service_tags=list(service.tags) if service else [],
            type=spec.type,
            interval=spec.interval,
            timeout=spec.timeout,
            ttl_ns=spec.ttl_ns,
        )

    def _store_service(self, txn: Txn, node: NodeRecord, service: ServiceRecord) -> None:
        previous = node.services.get(service.id)
        if previous is not None and previous.definition() == service.definition():
            service.create_index = previous.create_index
            service.modify_index = previous.modify_index
            node.services[service.id] = service
            return
        index = txn.changed(
            SERVICES_TABLE,
            service_topic(service.name),
            node_topic(node.name),
            agent_service_topic(node.name, service.id),
            CATALOG_SERVICES_TOPIC,
        )
        if previous is not None and previous.name != service.name:
            self._service_indexes[previous.name] = index
            txn.touch(service_topic(previous.name))
        service.create_index = previous.create_index if previous else index
        service.modify_index = index
        self._service_indexes[service.name] = index
        node.services[service.id] = service
        self._core.journal.record(
            events.SERVICE_REGISTERED, node=node.name, id=service.id, name=service.name,
            tags=list(service.tags),
        )

    def _refresh_service_fields_of_checks(
        self, txn: Txn, node: NodeRecord, service: ServiceRecord
    ) -> None:
        """The catalog stamps each service check with the service's current name and tags."""
        for check in self._service_checks(node, service.id):
            if check.service_name != service.name or check.service_tags != service.tags:
                refreshed = dataclasses.replace(
                    check, service_name=service.name, service_tags=list(service.tags)
                )
                self._store_check(txn, node, refreshed, keep_status=True, restart_timer=False)

    def _store_check(
        self,
        txn: Txn,
        node: NodeRecord,
        check: CheckRecord,
        *,
        keep_status: bool,
        restart_timer: bool = True,
    ) -> None:
        """Store a check; a real change takes an index and, if critical, invalidates sessions.

        keep_status: an existing check keeps its status and output (§4.3 re-register).
        restart_timer: (re)start its TTL timer, as a new CheckTTL does.
        """
        existing = node.catalog_check(check.check_id)
        if existing is not None and keep_status:
            check.status, check.output = existing.status, existing.output
            check.catalog_output = existing.catalog_output
        elif existing is None or check.status != existing.status:
            check.catalog_output = check.output  # status changes sync with their output
        self._keep_record(node, check)
        if restart_timer:
            self._arm_ttl_timer(node, check, existing)
        if existing is not None and existing.catalog_fields() == check.catalog_fields():
            check.create_index, check.modify_index = existing.create_index, existing.modify_index
            return
        index = txn.changed(CHECKS_TABLE, node_topic(node.name), CHECKS_TOPIC)
        check.create_index = existing.create_index if existing else index
        check.modify_index = index
        self._bump_services_of(txn, node, check)
        if existing is None or existing.status != check.status:
            self._core.journal.record(
                events.CHECK_STATUS, node=node.name, id=check.check_id,
                old=existing.status if existing else None, new=check.status,
            )
        if check.status == CRITICAL:
            # ensureCheckTxn: storing a critical check deletes the sessions bound to it.
            cause = events.CAUSE_NODE if check.check_id == SERF_CHECK_ID else events.CAUSE_CHECK
            self._sessions.invalidate_bound_to(txn, node.name, [check.check_id], cause)

    def _remove_check(self, txn: Txn, node: NodeRecord, check: CheckRecord) -> None:
        self._core.timers.cancel(check.ttl_timer)
        del node.checks[check.check_id]
        txn.changed(CHECKS_TABLE, node_topic(node.name), CHECKS_TOPIC)
        self._bump_services_of(txn, node, check)
        self._sessions.invalidate_bound_to(
            txn, node.name, [check.check_id], events.CAUSE_DEREGISTER
        )

    @staticmethod
    def _keep_record(node: NodeRecord, check: CheckRecord) -> None:
        if check.check_id == SERF_CHECK_ID:
            node.serf_check = check
        else:
            node.checks[check.check_id] = check

    def _bump_services_of(self, txn: Txn, node: NodeRecord, check: CheckRecord) -> None:
        """A service check moves its service's index; a node check moves all on the node."""
        if check.service_id:
            names = {check.service_name}
        else:
            names = {service.name for service in node.services.values()}
        for name in names:
            self._service_indexes[name] = txn.index
            txn.touch(service_topic(name))

    def _arm_ttl_timer(
        self, node: NodeRecord, check: CheckRecord, replaced: CheckRecord | None
    ) -> None:
        if replaced is not None and replaced is not check:
            self._core.timers.cancel(replaced.ttl_timer)
        self._core.timers.cancel(check.ttl_timer)
        check.ttl_timer = None
        if check.ttl_ns > 0:
            check.ttl_timer = self._core.timers.schedule(
                check.ttl_ns / SECOND,
                functools.partial(self._on_ttl_expired, node.name, check.check_id),
            )

    def _on_ttl_expired(self, node_name: str, check_id: str, handle: TimerHandle) -> None:
        """Timer thread (§4.6 CheckTTL): critical with `TTL expired`; no new timer."""
        with self._core.write() as txn:
            node = self._nodes.get(node_name)
            check = node.checks.get(check_id) if node else None
            if node is None or check is None or check.ttl_timer is not handle:
                return
            output = TTL_EXPIRED
            if check.output:
                output = f"{TTL_EXPIRED} (last output before timeout follows): {check.output}"
            expired = dataclasses.replace(check, status=CRITICAL, output=output, ttl_timer=None)
            self._store_check(txn, node, expired, keep_status=False, restart_timer=False)
