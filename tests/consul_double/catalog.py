"""Nodes, the agents' services and checks, and the catalog built from them (§4, §5, §1.6).

Every method is called with the cluster lock held; writes take the caller's Txn.
Guarantees (section numbers of consul-semantics.md, and of
docs/consul-semantics-addendum.md from §9 on):
* The catalog is the union of the agents' views; an agent change reaches it in
  the same write (anti-entropy's immediate sync, §4.3, §7). A re-register that
  changes nothing takes no index. Only `PUT /v1/catalog/deregister` makes the two
  differ (`in_catalog`, addendum §14): the records stay on the agent, out of the
  catalog, until a registration or a check's synced status change brings them back.
* Each check is held twice: the agent's copy (`status`, `output`) and the
  catalog's (`catalog_status`, `catalog_output`). A status change is synced with
  the check's own ACL token; when that token may no longer write, the catalog
  keeps its last copy (§11). Output-only changes stay on the agent (the 5m
  `check_update_interval` sync is not modelled).
* A check registered again under an existing ID keeps the agent's status and
  output, whatever the new definition says; its TTL timer starts afresh (§10).
* A check stored in the catalog as critical, or removed, invalidates the
  sessions bound to it (§1.5, §13); serfHealth going critical on node failure
  does the same (§1.6).
* A TTL check goes critical exactly TTL after its last update, with output
  `TTL expired` (§4.6).
* Alias checks (§9) follow the aliased service: a local one is re-evaluated when
  the agent notifies it (a check of that service added, changed in status or
  removed; the service added or removed), a remote one (AliasNode) whenever the
  catalog's view of that node changes; both at least every 60s.
* Per-service indexes move whenever an instance, one of its checks, or a node
  check of its node changes, as Consul's `service.<name>` index does (§5).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass

from . import events
from .acl import AclDenied, AclSystem, Authorizer
from .aliases import REMOTE_FAILURE, AliasedCheck, alias_verdict
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
# consul: agent/checks/alias.go (runLocal, maxDurationBetweenUpdates)
ALIAS_REFRESH_INTERVAL = 60.0
# Alias checks may alias each other's services; stop re-evaluating a cycle after this.
_MAX_ALIAS_ROUNDS = 32


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
    alias_service: str = ""
    alias_node: str = ""


class CatalogTable:
    def __init__(
        self,
        core: Core,
        nodes: dict[str, NodeRecord],
        sessions: SessionTable,
        acl: AclSystem | None = None,
        alias_refresh_interval: float = ALIAS_REFRESH_INTERVAL,
    ) -> None:
        self._core = core
        self._nodes = nodes
        self._sessions = sessions
        self._acl = acl if acl is not None else AclSystem.disabled()
        self._alias_refresh_interval = alias_refresh_interval
        self._service_indexes: dict[str, int] = {}
        # Alias bookkeeping of the write in progress (see _settle_aliases).
        self._alias_checks: set[tuple[str, str]] = set()
        self._aliases_notified: set[tuple[str, str]] = set()  # (node, aliased service ID)
        self._catalog_nodes_changed: set[str] = set()
        self._aliases_due: set[tuple[str, str]] = set()  # (node, alias check ID)

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
            if node.services[service_id].name == name and node.services[service_id].in_catalog
        ]

    def service_tags(self) -> dict[str, list[str]]:
        """`/v1/catalog/services`: every service name with the union of its tags."""
        tags: dict[str, set[str]] = {}
        for node in self._nodes.values():
            for service in node.services.values():
                if not service.in_catalog:
                    continue
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
            (check for check in node.catalog_checks() if check.service_id == service_id),
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
            catalog_status=PASSING,
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
            node.serf_check, status=PASSING if alive else CRITICAL, output=output
        )
        self._store_check(txn, node, serf, node.serf_check, restart_timer=False)
        self._settle_aliases(txn)

    # -- services ------------------------------------------------------------

    def register_service(
        self,
        txn: Txn,
        node_name: str,
        service: ServiceRecord,
        checks: list[CheckSpec],
        replace_existing_checks: bool,
        token: str = "",
    ) -> None:
        """§4.3: replace the definition wholesale; checks keep status (§10); sync at once.

        consul: agent/agent.go (addServiceInternal): the service and its checks are
        added with the request's token, and only then, with replace-existing-checks,
        the service's other checks are removed.
        """
        node = self._nodes[node_name]
        self._store_service(txn, node, service)
        for spec in checks:
            self._register(txn, node, spec, service, token)
        if replace_existing_checks:
            requested = {spec.check_id for spec in checks}
            for check in self._service_checks(node, service.id):
                if check.check_id not in requested:
                    self._remove_check(txn, node, check)
        self._refresh_service_fields_of_checks(txn, node, service)
        self._settle_aliases(txn)

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
        # consul: agent/local/state.go (removeServiceLocked -> notifyIfAliased)
        self._aliases_notified.add((node.name, service_id))
        self._catalog_nodes_changed.add(node.name)
        self._core.journal.record(
            events.SERVICE_DEREGISTERED, node=node.name, id=service.id, name=service.name,
            tags=list(service.tags),
        )
        self._settle_aliases(txn)

    # -- the catalog alone (addendum §14) -----------------------------------------

    def catalog_deregister(
        self, txn: Txn, node_name: str, service_id: str = "", check_id: str = ""
    ) -> None:
        """Catalog.Deregister: a service (with its checks), else a check, else the node's
        services and checks leave the catalog; the agent still holds them all.

        consul: agent/consul/fsm/commands_ce.go (applyDeregister: ServiceID, else CheckID,
        else the node) and agent/consul/state/catalog.go (deleteServiceTxn, deleteCheckTxn,
        deleteNodeTxn; each is a no-op for what does not exist). A deleted check deletes
        the sessions bound to it (checkSessionsTxn), a deleted node its sessions.
        """
        node = self._nodes.get(node_name)
        if node is None:
            return
        if service_id:
            self._evict_service(txn, node, service_id)
        elif check_id:
            check = node.checks.get(check_id)
            if check is not None and check.in_catalog:
                self._evict_check(txn, node, check)
        else:
            self._evict_node(txn, node)
        self._settle_aliases(txn)

    def catalog_service(self, node_name: str, service_id: str) -> ServiceRecord | None:
        node = self._nodes.get(node_name)
        service = node.services.get(service_id) if node else None
        return service if service is not None and service.in_catalog else None

    def catalog_check_of(self, node_name: str, check_id: str) -> CheckRecord | None:
        node = self._nodes.get(node_name)
        check = node.checks.get(check_id) if node else None
        return check if check is not None and check.in_catalog else None

    def _evict_node(self, txn: Txn, node: NodeRecord) -> None:
        """The node's services and checks go; the node itself and serfHealth stay (the
        leader re-registers a live serf member at its next reconcile; not modelled)."""
        for service_id in sorted(node.services):
            self._evict_service(txn, node, service_id)
        for check in sorted(node.checks.values(), key=lambda check: check.check_id):
            if check.in_catalog:
                self._evict_check(txn, node, check)
        for session in self._sessions.on_node(node.name):
            self._sessions.invalidate(txn, session, events.CAUSE_DEREGISTER)

    def _evict_service(self, txn: Txn, node: NodeRecord, service_id: str) -> None:
        service = node.services.get(service_id)
        if service is None or not service.in_catalog:
            return
        for check in self._service_checks(node, service_id):
            if check.in_catalog:
                self._evict_check(txn, node, check)
        service.in_catalog = False
        self._service_in_catalog_changed(txn, node, service, events.SERVICE_DEREGISTERED)

    def _evict_check(self, txn: Txn, node: NodeRecord, check: CheckRecord) -> None:
        check.in_catalog = False
        self._catalog_nodes_changed.add(node.name)
        txn.changed(CHECKS_TABLE, node_topic(node.name), CHECKS_TOPIC)
        self._bump_services_of(txn, node, check)
        self._sessions.invalidate_bound_to(
            txn, node.name, [check.check_id], events.CAUSE_DEREGISTER
        )

    def _return_service(self, txn: Txn, node: NodeRecord, check: CheckRecord) -> None:
        """consul: agent/local/state.go (syncCheck sends the check's service along): a
        check status synced to the catalog brings back a service deregistered there."""
        service = node.services.get(check.service_id) if check.service_id else None
        if service is None or service.in_catalog:
            return
        service.in_catalog = True
        self._service_in_catalog_changed(txn, node, service, events.SERVICE_REGISTERED)

    def _service_in_catalog_changed(
        self, txn: Txn, node: NodeRecord, service: ServiceRecord, kind: str
    ) -> None:
        index = txn.changed(
            SERVICES_TABLE, service_topic(service.name), node_topic(node.name),
            CATALOG_SERVICES_TOPIC,
        )
        service.modify_index = index
        if kind == events.SERVICE_REGISTERED:
            service.create_index = index  # a new row in the catalog
        self._service_indexes[service.name] = index
        self._catalog_nodes_changed.add(node.name)
        self._core.journal.record(
            kind, node=node.name, id=service.id, name=service.name, tags=list(service.tags),
            catalog_only=True,
        )

    # -- checks --------------------------------------------------------------

    def register_check(self, txn: Txn, node_name: str, spec: CheckSpec, token: str = "") -> None:
        """§4.6 `check/register`: like a service's check, a known ID keeps its status (§10)."""
        node = self._nodes[node_name]
        service = node.services.get(spec.service_id) if spec.service_id else None
        self._register(txn, node, spec, service, token)
        self._settle_aliases(txn)

    def deregister_check(self, txn: Txn, node_name: str, check_id: str) -> None:
        node = self._nodes[node_name]
        self._remove_check(txn, node, node.checks[check_id])
        self._settle_aliases(txn)

    def update_ttl_check(
        self, txn: Txn, node_name: str, check_id: str, status: str, output: str
    ) -> None:
        """§4.6 pass/warn/fail/update: set status and output, restart the TTL timer.

        consul: agent/checks/check.go (CheckTTL.SetStatus): the output is remembered
        for the `TTL expired` message and the timer restarts at the full TTL.
        """
        node = self._nodes[node_name]
        check = node.checks[check_id]
        if check.ttl_ns <= 0:
            raise StateError(f"CheckID {go_quote(check_id)} does not have associated TTL")
        updated = dataclasses.replace(check, status=status, output=output,
                                      ttl_last_output=output)
        self._store_check(txn, node, updated, check, restart_timer=True)
        self._settle_aliases(txn)

    # -- helpers: registration -----------------------------------------------

    def _register(
        self, txn: Txn, node: NodeRecord, spec: CheckSpec, service: ServiceRecord | None,
        token: str,
    ) -> None:
        """Add a check, or replace one with the same ID keeping the agent's status (§10).

        consul: agent/agent.go (addServiceInternal restores Status and Output from the
        snapshot of the agent's checks; addCheckLocked puts the existing ones back with a
        deferred UpdateCheck). addCheck stops the old runner and starts a new one: a TTL
        check's timer restarts at the full TTL, an alias check is evaluated at once.
        """
        previous = node.checks.get(spec.check_id)
        check = self._check_from_spec(node, spec, service, token)
        if previous is not None:
            check.status, check.output = previous.status, previous.output
            self._core.timers.cancel(previous.alias_timer)
        self._store_check(txn, node, check, previous, restart_timer=True, registered=True)
        if check.is_alias:
            self._aliases_due.add((node.name, check.check_id))

    @staticmethod
    def _service_checks(node: NodeRecord, service_id: str) -> list[CheckRecord]:
        return [check for check in node.checks.values() if check.service_id == service_id]

    @staticmethod
    def _check_from_spec(
        node: NodeRecord, spec: CheckSpec, service: ServiceRecord | None, token: str
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
            token=token,
            alias_service=spec.alias_service,
            alias_node=spec.alias_node,
        )

    def _store_service(self, txn: Txn, node: NodeRecord, service: ServiceRecord) -> None:
        previous = node.services.get(service.id)
        if previous is None:
            # consul: agent/local/state.go (setServiceStateLocked notifies aliases of a new service)
            self._aliases_notified.add((node.name, service.id))
        if (previous is not None and previous.in_catalog
                and previous.definition() == service.definition()):
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
        # A service back in the catalog after a catalog deregistration is a new row there.
        kept = previous is not None and previous.in_catalog
        service.create_index = previous.create_index if previous is not None and kept else index
        service.modify_index = index
        self._service_indexes[service.name] = index
        node.services[service.id] = service
        self._catalog_nodes_changed.add(node.name)
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
                self._store_check(txn, node, refreshed, check, restart_timer=False)

    # -- helpers: the agent's copy and the catalog's ---------------------------

    def _store_check(
        self,
        txn: Txn,
        node: NodeRecord,
        check: CheckRecord,
        previous: CheckRecord | None,
        *,
        restart_timer: bool,
        registered: bool = False,
    ) -> None:
        """Store the agent's copy of a check, then sync it to the catalog.

        previous: the record it replaces (None for a new check).
        restart_timer: (re)start its TTL timer, as a new or updated CheckTTL does.
        registered: a (re-)registration, rather than a status update.
        """
        self._keep_record(node, check)
        if check.is_alias:
            self._alias_checks.add((node.name, check.check_id))
        else:
            self._alias_checks.discard((node.name, check.check_id))
        if restart_timer:
            self._arm_ttl_timer(node, check, previous)
        if previous is None or registered or previous.status != check.status:
            # consul: agent/local/state.go (setCheckStateLocked and UpdateCheck -> notifyIfAliased)
            self._aliases_notified.add((node.name, check.service_id))
        self._sync_check(node, check, previous, registered)
        if check.in_catalog:
            self._return_service(txn, node, check)
        self._publish_check(txn, node, check, previous)

    def _sync_check(
        self, node: NodeRecord, check: CheckRecord, previous: CheckRecord | None, registered: bool
    ) -> None:
        """Decide the catalog's copy of status and output.

        consul: agent/local/state.go (UpdateCheck defers an output-only change; syncCheck
        sends the check with aclTokenForCheckSync: its own token, else the agent's default
        token; an ACL refusal marks it in sync and the catalog keeps its copy).
        serfHealth belongs to the servers and a new check was just vetted by the endpoint
        with the very token it is synced with, so both always reach the catalog.
        """
        if previous is None or check.check_id == SERF_CHECK_ID:
            check.catalog_status, check.catalog_output = check.status, check.output
            return
        wants_sync = registered or previous.status != check.status
        if wants_sync and self._may_sync(node, check):
            check.catalog_status, check.catalog_output = check.status, check.output
            check.in_catalog = True  # a catalog deregistration is undone (addendum §14)
        else:
            check.catalog_status = previous.catalog_status
            check.catalog_output = previous.catalog_output
            check.in_catalog = previous.in_catalog

    def _may_sync(self, node: NodeRecord, check: CheckRecord) -> bool:
        """Catalog.Register's vetting of the check's token (vetRegisterWithAuthorizer)."""
        authorizer = self._authorizer(check.token)
        if authorizer is None:
            return False  # `ACL not found`: the token was revoked
        if check.service_id:
            return authorizer.allows("service", check.service_name, "write")
        return authorizer.allows("node", node.name, "write")

    def _authorizer(self, token: str) -> Authorizer | None:
        try:
            return self._acl.resolve(token or None)
        except AclDenied:
            return None

    def _publish_check(
        self, txn: Txn, node: NodeRecord, check: CheckRecord, previous: CheckRecord | None
    ) -> None:
        """A real catalog change takes an index and, if critical, invalidates sessions."""
        if previous is not None and previous.catalog_fields() == check.catalog_fields():
            check.create_index, check.modify_index = previous.create_index, previous.modify_index
            return
        index = txn.changed(CHECKS_TABLE, node_topic(node.name), CHECKS_TOPIC)
        kept = previous is not None and previous.in_catalog
        check.create_index = previous.create_index if previous is not None and kept else index
        check.modify_index = index
        self._bump_services_of(txn, node, check)
        self._catalog_nodes_changed.add(node.name)
        if previous is None or previous.catalog_status != check.catalog_status:
            self._core.journal.record(
                events.CHECK_STATUS, node=node.name, id=check.check_id,
                old=previous.catalog_status if previous else None, new=check.catalog_status,
            )
        if check.catalog_status == CRITICAL:
            # ensureCheckTxn: storing a critical check deletes the sessions bound to it.
            cause = events.CAUSE_NODE if check.check_id == SERF_CHECK_ID else events.CAUSE_CHECK
            self._sessions.invalidate_bound_to(txn, node.name, [check.check_id], cause)

    def _remove_check(self, txn: Txn, node: NodeRecord, check: CheckRecord) -> None:
        """consul: agent/local/state.go (removeCheckLocked notifies aliases); the catalog
        removal uses the agent token (deleteCheck), so it is never refused."""
        self._core.timers.cancel(check.ttl_timer)
        self._core.timers.cancel(check.alias_timer)
        del node.checks[check.check_id]
        self._alias_checks.discard((node.name, check.check_id))
        self._aliases_notified.add((node.name, check.service_id))
        self._catalog_nodes_changed.add(node.name)
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

    # -- helpers: status updates and timers ------------------------------------

    def _update_status(
        self, txn: Txn, node: NodeRecord, check: CheckRecord, status: str, output: str
    ) -> None:
        """consul: agent/local/state.go (UpdateCheck): nothing happens when nothing changes."""
        if check.status == status and check.output == output:
            return
        updated = dataclasses.replace(check, status=status, output=output)
        self._store_check(txn, node, updated, check, restart_timer=False)

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
        """Timer thread (§4.6 CheckTTL): critical with `TTL expired`; no new timer.

        consul: agent/checks/check.go (CheckTTL.getExpiredOutput quotes lastOutput).
        """
        with self._core.write() as txn:
            node = self._nodes.get(node_name)
            check = node.checks.get(check_id) if node else None
            if node is None or check is None or check.ttl_timer is not handle:
                return
            output = TTL_EXPIRED
            if check.ttl_last_output:
                output = (
                    f"{TTL_EXPIRED} (last output before timeout follows): "
                    f"{check.ttl_last_output}"
                )
            check.ttl_timer = None
            self._update_status(txn, node, check, CRITICAL, output)
            self._settle_aliases(txn)

    # -- helpers: alias checks (§9) ----------------------------------------------

    def _settle_aliases(self, txn: Txn) -> None:
        """Re-evaluate every alias check this write notified, until none changes.

        An alias check's own update is a check update, which may notify further aliases.
        """
        for _ in range(_MAX_ALIAS_ROUNDS):
            due = self._take_due_aliases()
            if not due:
                return
            for node_name, check_id in sorted(due):
                self._evaluate_alias(txn, node_name, check_id)
        self._take_due_aliases()  # a cycle of aliases that never settles: leave it be

    def _take_due_aliases(self) -> set[tuple[str, str]]:
        notified, changed_nodes = self._aliases_notified, {
            name.lower() for name in self._catalog_nodes_changed
        }
        due = self._aliases_due
        self._aliases_notified, self._catalog_nodes_changed, self._aliases_due = set(), set(), set()
        for node_name, check_id in self._alias_checks:
            check = self._nodes[node_name].checks.get(check_id)
            if check is None:
                continue
            if check.alias_node:
                if check.alias_node.lower() in changed_nodes:
                    due.add((node_name, check_id))
            elif (node_name, check.alias_service) in notified:
                due.add((node_name, check_id))
        return due

    def _evaluate_alias(self, txn: Txn, node_name: str, check_id: str) -> None:
        node = self._nodes.get(node_name)
        check = node.checks.get(check_id) if node else None
        if node is None or check is None or not check.is_alias:
            return
        if check.alias_node:
            status, output = self._remote_alias_verdict(check)
        else:
            status, output = self._local_alias_verdict(node, check)
        self._arm_alias_refresh(node, check)
        self._update_status(txn, node, check, status, output)

    def _local_alias_verdict(self, node: NodeRecord, alias: CheckRecord) -> tuple[str, str]:
        """consul: agent/checks/alias.go (runLocal): the agent's own checks, all of them
        (so node-level ones too, the alias itself included when it has no ServiceID), and
        State.ServiceExists. serfHealth lives only in the catalog, so it is not among them.
        """
        checks = [
            AliasedCheck(node.name, check.name, check.status, check.output, check.service_id)
            for _, check in sorted(node.checks.items())
        ]
        return alias_verdict("", alias.alias_service,
                             checks, lambda: alias.alias_service in node.services)

    def _remote_alias_verdict(self, alias: CheckRecord) -> tuple[str, str]:
        """consul: agent/checks/alias.go (runQuery): a stale Health.NodeChecks query of the
        catalog with the check's token (checkServiceExistsOnRemoteServer for the service);
        an RPC error makes the check critical with `Failure checking aliased node or
        service: <error>`. ACLs filter what the token cannot read.
        """
        authorizer = self._authorizer(alias.token)
        if authorizer is None:
            return CRITICAL, REMOTE_FAILURE + "ACL not found"
        wanted = alias.alias_node.lower()
        target = next((node for node in self._nodes.values() if node.name.lower() == wanted), None)
        if target is None:
            return alias_verdict(alias.alias_node, alias.alias_service, [], lambda: False)
        readable_node = authorizer.allows("node", target.name, "read")
        checks = [
            AliasedCheck(target.name, check.name, check.catalog_status, check.catalog_output,
                         check.service_id)
            for check in sorted(target.catalog_checks(), key=lambda check: check.check_id)
            if readable_node and (
                not check.service_id or authorizer.allows("service", check.service_name, "read")
            )
        ]
        service = self.catalog_service(target.name, alias.alias_service)

        def service_exists() -> bool:
            return service is not None and readable_node and authorizer.allows(
                "service", service.name, "read")

        return alias_verdict(alias.alias_node, alias.alias_service, checks, service_exists)

    def _arm_alias_refresh(self, node: NodeRecord, check: CheckRecord) -> None:
        """runLocal re-reads the local state a minute after its last evaluation anyway, and
        runQuery's blocking query returns within MaxQueryTime (a minute) and runs again."""
        self._core.timers.cancel(check.alias_timer)
        check.alias_timer = self._core.timers.schedule(
            self._alias_refresh_interval,
            functools.partial(self._on_alias_refresh, node.name, check.check_id),
        )

    def _on_alias_refresh(self, node_name: str, check_id: str, handle: TimerHandle) -> None:
        with self._core.write() as txn:
            node = self._nodes.get(node_name)
            check = node.checks.get(check_id) if node else None
            if check is None or check.alias_timer is not handle:
                return
            self._aliases_due.add((node_name, check_id))
            self._settle_aliases(txn)
