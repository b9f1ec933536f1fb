"""Service tagger: keeps the role's labels and Meta.session on the target services.

The controller says which role to publish (`request`); one applier thread makes Consul's agent
view match it, and one watcher thread per target blocks on the service's content hash
(consul-semantics §3, hash blocking) so that when someone else re-registers the service
(Nomad's sync, an operator) the labels are put back within a round trip.

Tags are changed by re-registering the complete definition through the agent API (§4.3, §7):
registration decoding is strict and replaces the definition wholesale, so the body is built
from exactly the fields a registration accepts. Checks are kept (no replace-existing-checks).

Safety: the primary label is only ever written while the session keeper says our lease holds.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from consul_leader.adapters.config import Config
from consul_leader.adapters.consul import (
    MALFORMED,
    ConsulClient,
    ConsulDenied,
    ConsulError,
    log_level,
)
from consul_leader.adapters.threads import start_worker

log = logging.getLogger("consul_leader.tagger")

# Fields of /v1/agent/services output that a registration body accepts under another name
# or as is (§4.1 vs §4.3). Everything else (ContentHash, Datacenter, indexes) is refused.
_COPIED_FIELDS = (
    "ID",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "EnableTagOverride",
    "Weights",
    "Kind",
    "Proxy",
    "Connect",
    "SocketPath",
    "Namespace",
    "Partition",
    "Locality",
)
# The agent adds these itself when Address is an IP (§4.1); sending them back would make them
# explicit, which Nomad's sync would count as a difference.
_AUTO_TAGGED_ADDRESSES = ("lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6", "lan", "wan")
SESSION_META_KEY = "session"
DISCOVERY_INTERVAL = 5.0
NOT_FOUND_LOG_EVERY = 30  # one-second rounds: say so at once, then every 30 s


class Role(enum.Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


def labelled(tags: Sequence[str], role: Role, primary: str, replica: str | None) -> list[str]:
    """The tags with our labels set for `role`; other tags keep their order.

    Consul's ?tag= filter is case-insensitive (§5), so our labels are removed in any case.
    """
    ours = {primary.lower()} | ({replica.lower()} if replica else set())
    kept = [tag for tag in tags if tag.lower() not in ours]
    wanted = primary if role is Role.PRIMARY else replica
    return [*kept, wanted] if wanted else kept


def registration_body(
    service: Mapping[str, Any], tags: list[str], meta: dict[str, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": service.get("Service")}
    for name in _COPIED_FIELDS:
        value = service.get(name)
        if value not in (None, "", {}, []) or name in ("Tags", "Port"):
            body[name] = value
    tagged = {
        name: value
        for name, value in (service.get("TaggedAddresses") or {}).items()
        if not (name in _AUTO_TAGGED_ADDRESSES and value.get("Address") == service.get("Address"))
    }
    if tagged:
        body["TaggedAddresses"] = tagged
    body["Tags"] = tags
    body["Meta"] = meta
    return body


def _agent_service(answer: Any) -> dict[str, Any]:
    """The agent's view of one service, checked for the fields we rewrite (§4.2)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("ID"), str):
        raise ValueError("not a service definition")
    tags, meta = answer.get("Tags") or [], answer.get("Meta") or {}
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError("service Tags is not a list of strings")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("service Meta is not a map of strings")
    return answer


def alloc_targets(services: Mapping[str, Any], prefix: str, name: str) -> list[str]:
    """The allocation's services to label: those named like our service if there are any
    (so a metrics service of the same allocation is left alone), else all of them, as the
    original sidecar did."""
    mine = {sid: svc for sid, svc in services.items() if sid.startswith(prefix)}
    named = [
        sid for sid, svc in mine.items() if isinstance(svc, dict) and svc.get("Service") == name
    ]
    return sorted(named or mine)


class ServiceTagger:
    def __init__(
        self,
        config: Config,
        client: ConsulClient,
        *,
        lease_valid: Callable[[], bool],
        on_write: Callable[[str], None] = lambda result: None,
        on_target_registered: Callable[[str], None] = lambda target: None,
        on_cannot_publish: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._config = config
        self._client = client
        self._lease_valid = lease_valid
        self._on_write = on_write
        self._on_target_registered = on_target_registered
        self._on_cannot_publish = on_cannot_publish
        # Targets we have written at least once since they (re)appeared: until then we do not
        # know that our token may write them, so nothing may be claimed on their behalf.
        self._verified: set[str] = set()
        # Targets Consul does not know right now (Nomad deregistered them), since when.
        self._missing_since: dict[str, float] = {}
        self._cond = threading.Condition()
        self._role = Role.REPLICA
        self._session: str | None = None
        self._requested = 1  # the initial REPLICA role must be applied too: clears stale labels
        self._applied = 0
        self._dirty = True
        self._targets: list[str] = list(config.service_ids)
        self._watched: set[str] = set()
        self._stopping = False
        self._stopped = threading.Event()  # for pauses that role changes must not cut short
        self._threads: list[threading.Thread] = []

    # -- what the controller asks ---------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self._config.service_ids or self._config.alloc_id)

    def targets(self) -> list[str]:
        with self._cond:
            return list(self._targets)

    def request(self, role: Role, session: str | None) -> int:
        with self._cond:
            if (role, session) != (self._role, self._session):
                self._role, self._session = role, session
                self._requested += 1
            self._dirty = True
            self._cond.notify_all()
            return self._requested

    def confirmed(self, role: Role) -> bool:
        """True when `role` is the latest request and Consul's view shows it on every target."""
        with self._cond:
            return self._role is role and self._applied >= self._requested

    def publishable(self) -> bool:
        """Every target is registered and has taken a write from us: we may compete."""
        with self._cond:
            if not self.enabled:
                return True
            return bool(self._targets) and not self._missing_since and all(
                target in self._verified for target in self._targets)

    def wait_confirmed(self, role: Role, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._role is role and self._applied >= self._requested):
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._cond.wait(left)
            return True

    def start(self) -> None:
        self._spawn(self._apply_loop, "tagger")
        if self._config.alloc_id and not self._config.service_ids:
            self._spawn(self._discovery_loop, "tagger-discovery")
        else:
            for target in self.targets():
                self._watch(target)

    def stop(self) -> None:
        self._stopped.set()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- applier --------------------------------------------------------------------------

    def _apply_loop(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not self._dirty and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._dirty = False
                role, session, generation = self._role, self._session, self._requested
            try:
                done = self._reconcile_all(role, session)
                attempt = 0
            except (ConsulError, *MALFORMED) as exc:
                attempt += 1
                done = False
                self._on_write("denied" if isinstance(exc, ConsulDenied) else "error")
                log.log(log_level(exc), "tag update failed, retrying", extra={"error": str(exc)})
                if isinstance(exc, ConsulDenied) and role is Role.PRIMARY:
                    # Never claim leadership we cannot publish: give the session up.
                    self._on_cannot_publish(str(exc))
            with self._cond:
                if done and generation == self._requested:
                    self._applied = generation
                    self._cond.notify_all()
                elif not done:
                    self._dirty = True
                    self._cond.wait(min(2.0, 0.1 * 2**attempt))

    def _reconcile_all(self, role: Role, session: str | None) -> bool:
        if role is Role.PRIMARY and not self._lease_valid():
            return False  # never advertise primary on a lease we cannot vouch for
        done = all(self._reconcile(target, role, session) for target in self.targets())
        if role is Role.PRIMARY:
            self._give_up_if_unpublished()
        return done

    def _give_up_if_unpublished(self) -> None:
        """A leader whose service is gone (the task stopped first, as Nomad stops sidecars
        last) publishes nothing: let an instance whose service exists take over. The grace
        of one renew interval lets a deregister-then-register by Nomad pass."""
        now = time.monotonic()
        with self._cond:
            gone = [target for target, since in self._missing_since.items()
                    if now - since >= self._config.renew_interval]
        if gone:
            self._on_cannot_publish(f"service {gone[0]} is no longer registered")

    def _reconcile(self, target: str, role: Role, session: str | None) -> bool:
        reply = self._client.call("GET", f"/v1/agent/service/{target}", timeout=5.0, allow=(404,))
        if reply.status == 404:
            with self._cond:
                self._missing_since.setdefault(target, time.monotonic())
            return True  # nothing registered, so nothing advertises anything
        with self._cond:
            self._missing_since.pop(target, None)
        service = _agent_service(reply.json())
        tags = labelled(
            service.get("Tags") or [], role, self._config.primary_label, self._config.replica_label
        )
        meta = dict(service.get("Meta") or {})
        if session:
            meta[SESSION_META_KEY] = session
        else:
            meta.pop(SESSION_META_KEY, None)
        unchanged = tags == (service.get("Tags") or []) and meta == (service.get("Meta") or {})
        if unchanged and self._is_verified(target):
            return True
        if role is Role.PRIMARY and not self._lease_valid():
            return False
        adds_primary = self._config.primary_label not in (service.get("Tags") or [])
        if role is Role.PRIMARY and adds_primary and self._another_primary(service, target):
            return False
        body = registration_body(service, tags, meta)
        self._client.call("PUT", "/v1/agent/service/register", json_body=body, timeout=5.0)
        self._on_write("ok")
        if not self._is_verified(target):
            # We may write it; can we also see who else is primary (see _another_primary)?
            if self._health_of(service, target) is None:
                return False
            with self._cond:
                self._verified.add(target)
        log.info(
            "labels written",
            extra={"service_id": target, "role": role.value, "tags": ",".join(tags)},
        )
        return True

    def _another_primary(self, service: Mapping[str, Any], target: str) -> bool:
        """Does Consul still list another instance as a passing primary?

        Normally the old leader took its label off before letting the key go. But when the
        key changed hands behind its back (deleted, say, while it could not hear its agent),
        it still looks primary until its role check expires. Publishing now would list two
        primaries, so wait: that check stops passing within a TTL.
        """
        entries = self._health_of(service, target)
        if entries is None:
            return True
        others = sorted(entry["Service"]["ID"] for entry in entries
                        if self._is_passing_primary(entry)
                        and entry["Service"]["ID"] not in self.targets())
        if others:
            log.info("waiting for another passing primary to go before labelling ours",
                     extra={"service_id": target, "others": ",".join(others)})
        return bool(others)

    def _health_of(self, service: Mapping[str, Any], target: str) -> list[Any] | None:
        """Every instance of the target's service with its checks, or None when the answer
        leaves instances out (ACLs): then nobody can tell whether another one is primary.

        All instances are asked for, not just `?tag=&passing` ones, so that an answer hidden
        by ACLs shows (our own instance missing) instead of looking like "no other primary".
        """
        name = str(service.get("Service") or "")
        reply = self._client.call("GET", f"/v1/health/service/{name}", timeout=5.0)
        entries = reply.json()
        if not isinstance(entries, list):
            raise ValueError("health answer is not a list")
        listed = {entry["Service"]["ID"] for entry in entries}
        filtered = reply.headers.get("X-Consul-Results-Filtered-By-ACLs", "").lower() == "true"
        if filtered or target not in listed:
            log.error("cannot check that no other instance is primary: Consul's answer leaves "
                      "instances out; the token may lack permission 'node:read' on \"\" "
                      f"(every node) or permission 'service:read' on \"{name}\"")
            return None
        return entries

    def _is_passing_primary(self, entry: Mapping[str, Any]) -> bool:
        # As ?tag= and ?passing would judge it (§5): tags case-insensitively, every check.
        tags = {str(tag).lower() for tag in entry["Service"].get("Tags") or []}
        checks = entry.get("Checks") or []
        return self._config.primary_label.lower() in tags and all(
            check.get("Status") == "passing" for check in checks)

    def _is_verified(self, target: str) -> bool:
        with self._cond:
            return target in self._verified

    def _mark_dirty(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    # -- watchers -------------------------------------------------------------------------

    def _watch(self, target: str) -> None:
        with self._cond:
            if target in self._watched:
                return
            self._watched.add(target)
        self._spawn(lambda: self._watch_loop(target), f"tagger-watch-{target[:40]}")

    def _watch_loop(self, target: str) -> None:
        content_hash: str | None = None
        failures = 0
        wait = f"{int(self._config.watch_wait)}s"
        while not self._is_stopping():
            params = {"hash": content_hash, "wait": wait} if content_hash else None
            try:
                reply = self._client.call(
                    "GET",
                    f"/v1/agent/service/{target}",
                    params=params,
                    timeout=self._config.watch_wait * 1.1 + 5,
                    allow=(404,),
                )
                failures = 0
            except (ConsulError, *MALFORMED) as exc:
                failures += 1
                log.debug("service watch failed", extra={"service_id": target, "error": str(exc)})
                self._pause(min(5.0, 0.2 * 2**failures))
                continue
            new_hash = reply.content_hash if reply.status == 200 else None
            if new_hash != content_hash:
                if content_hash is None or new_hash is None:
                    self._on_target_registered(target)  # (re)appeared: our check may be gone
                    with self._cond:
                        self._verified.discard(target)
                content_hash = new_hash
                self._mark_dirty()
            if reply.status == 404:
                self._mark_dirty()  # let the applier notice how long it has been gone
                self._pause(1.0)  # gone (Nomad deregistered it): look again shortly

    def _discovery_loop(self) -> None:
        prefix = f"_nomad-task-{self._config.alloc_id}-"
        rounds = 0
        while not self._is_stopping():
            try:
                reply = self._client.call("GET", "/v1/agent/services", timeout=5.0)
                found = alloc_targets(reply.json(), prefix, self._config.service_name)
                self._adopt_targets(found)
                if not self.targets() and rounds % NOT_FOUND_LOG_EVERY == 0:
                    self._log_nothing_found(reply.headers)
            except ConsulError as exc:
                log.log(log_level(exc), "service discovery failed", extra={"error": str(exc)})
            except MALFORMED:
                log.warning("service discovery: unexpected answer from /v1/agent/services")
            rounds += 1
            self._pause(DISCOVERY_INTERVAL if self.targets() else 1.0)

    def _log_nothing_found(self, headers: Mapping[str, str]) -> None:
        alloc = self._config.alloc_id
        if headers.get("X-Consul-Results-Filtered-By-ACLs", "").lower() == "true":
            log.error(
                f"no service of allocation {alloc} is visible: the token may lack permission "
                f"'service:read' on \"{self._config.service_name}\" (Consul filtered the "
                "answer by ACLs)")
        else:
            log.warning(f"waiting for Nomad to register the services of allocation {alloc}")

    def _adopt_targets(self, found: list[str]) -> None:
        with self._cond:
            new = [sid for sid in found if sid not in self._targets]
            self._targets.extend(new)
        if new:
            log.info("target services found", extra={"service_ids": ",".join(new)})
        for target in new:
            self._watch(target)
        if new:
            self._mark_dirty()

    # -- helpers --------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        self._threads.append(start_worker(name, target, self._is_stopping, self._pause))

    def _is_stopping(self) -> bool:
        return self._stopped.is_set()

    def _pause(self, seconds: float) -> None:
        self._stopped.wait(seconds)
