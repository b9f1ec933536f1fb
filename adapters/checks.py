"""TTL health checks that make a stale sidecar look unhealthy, and let Consul expire it at TTL.

Two kinds, both TTL checks with the session's TTL, passed only by the session keeper right
after a renew Consul confirmed within the lease:

* the **lease check**, on a small service the sidecar registers for itself. The session is
  bound to it (ServiceChecks), so a crashed or paused sidecar loses its session when the check
  expires, at TTL, not at Consul's 2 x TTL session timer. It lives on our own service because
  Nomad re-registers its services with replace-existing-checks, which would deregister a
  check of ours on them and so invalidate the session (consul-semantics §1.5, §7).
* a **role check** on each target service, so `health/service/<name>?tag=<primary>&passing`
  drops an instance whose sidecar can no longer confirm its role (paused, wedged, cut off),
  even while its primary label is still there. If Nomad removes it, the next pass sees 404
  and registers it again.

Order matters. A role check must stop passing *before* the lease check does: otherwise a
dead leader's session is invalidated (lease check expired), a follower takes over, and the
dead leader's role check still passes for a moment, listing two primaries. So role checks
get a shorter TTL than the lease check; each round passes all checks at once (in a row, a
slow agent would let the lease check lapse), in a thread of its own so renews go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from consul_leader.adapters.config import Config
from consul_leader.adapters.consul import MALFORMED, ConsulClient, ConsulError, log_level
from consul_leader.adapters.durations import format_duration
from consul_leader.adapters.threads import start_worker

log = logging.getLogger("consul_leader.checks")

LEASE_SERVICE_NAME = "consul-leader"
LEASE_SERVICE_REAP_AFTER = "10m"


def role_check_ttl(ttl: float, renew_interval: float) -> float:
    """A little shorter than the lease check's TTL. The two are passed one round trip apart,
    so a small margin orders their expiry; a large one would eat into the outage a leader
    must survive (TTL - SLEEP), since the role check must not lapse during it either."""
    return ttl - min(0.25, (ttl - renew_interval) / 4)


class HealthChecks:
    def __init__(
        self,
        config: Config,
        client: ConsulClient,
        instance: str,
        targets: Callable[[], Sequence[str]],
    ) -> None:
        self._config = config
        self._client = client
        self._targets = targets
        self._enabled = config.health_check
        self.lease_service_id = f"consul-leader-{instance}"
        self._lease_check_id = f"consul-leader:lease:{instance}"
        self._lock = threading.Condition()
        self._registered: set[str] = set()
        self._role_ttl_text = format_duration(role_check_ttl(config.ttl, config.renew_interval))
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="check-pass")
        self._round_wanted: tuple[bool, str] | None = None
        self._stopping = False
        self._gate: Callable[[], bool] = lambda: False

    @property
    def lease_check_id(self) -> str | None:
        return self._lease_check_id if self._enabled else None

    @staticmethod
    def role_check_id(target: str) -> str:
        return f"consul-leader:role:{target}"

    def forget(self, target: str) -> None:
        """The target was registered anew (perhaps without our check): register it again."""
        with self._lock:
            self._registered.discard(self.role_check_id(target))

    def ensure_registered(self) -> None:
        if not self._enabled:
            return
        if not self._is_registered(self._lease_check_id):
            self._register_lease_service()
        for target in self._targets():
            check_id = self.role_check_id(target)
            if not self._is_registered(check_id):
                self._register_role_check(target, check_id)

    def pass_all(self, note: str, *, roles: bool = True,
                 gate: Callable[[], bool] = lambda: True) -> None:
        """One round, now: the role checks (if `roles`) and the lease check, all at once. Each
        pass is sent only while `gate()` holds. A check Consul lost is registered again."""
        if not self._enabled:
            return
        self.ensure_registered()
        # All at once: against a slow agent, one pass after another would let the lease
        # check lapse. The role checks' shorter TTL keeps their expiry first. The lease pass
        # goes out even if a role pass fails: a missed role pass only makes that instance
        # look unhealthy for a while, a missed lease pass would cost the session.
        check_ids = [self.role_check_id(t) for t in self._targets()] if roles else []
        futures = [self._pool.submit(self._pass, check_id, note, gate)
                   for check_id in [*check_ids, self._lease_check_id]]
        failures = [exc for f in futures if isinstance(exc := f.exception(), Exception)]
        if failures:
            raise failures[0]

    def start_passer(self, gate: Callable[[], bool]) -> None:
        """Rounds requested with `request_round` run in a thread of their own, gated."""
        self._gate = gate
        start_worker("check-passer", self._passer_loop, lambda: self._stopping)

    def request_round(self, note: str, *, roles: bool) -> None:
        with self._lock:
            self._round_wanted = (roles, note)
            self._lock.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _passer_loop(self) -> None:
        while True:
            with self._lock:
                while self._round_wanted is None and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                wanted, self._round_wanted = self._round_wanted, None
            if wanted is None:
                continue
            roles, note = wanted
            try:
                self.pass_all(note, roles=roles, gate=self._gate)
            except (ConsulError, *MALFORMED) as exc:
                # The next renew asks for another round; the TTLs leave room for a miss.
                log.log(log_level(exc), "passing the health checks failed",
                        extra={"error": str(exc)})

    def _pass(self, check_id: str, note: str, gate: Callable[[], bool]) -> None:
        if not gate():
            return  # the state this pass would vouch for is no longer confirmed
        reply = self._client.call(
            "PUT", f"/v1/agent/check/pass/{check_id}", params={"note": note},
            timeout=self._timeout(), allow=(404,),
        )
        if reply.status == 404:
            with self._lock:
                self._registered.discard(check_id)
            self.ensure_registered()

    def deregister_all(self, timeout: float) -> None:
        """Clean shutdown: take our checks and our own service away (best effort)."""
        if not self._enabled:
            return
        for target in self._targets():
            self._try("PUT", f"/v1/agent/check/deregister/{self.role_check_id(target)}", timeout)
        self._try("PUT", f"/v1/agent/service/deregister/{self.lease_service_id}", timeout)
        with self._lock:
            self._registered.clear()

    # -- internals ------------------------------------------------------------------------

    def _is_registered(self, check_id: str) -> bool:
        with self._lock:
            return check_id in self._registered

    def _mark(self, check_id: str) -> None:
        with self._lock:
            self._registered.add(check_id)

    def _register_lease_service(self) -> None:
        body = {
            "ID": self.lease_service_id,
            "Name": LEASE_SERVICE_NAME,
            "Tags": [self._config.service_name],
            "Meta": {"lock_key": self._config.kv_path[:512]},
            "Check": {
                "CheckID": self._lease_check_id,
                "Name": "consul-leader lease",
                "Notes": "Passed after each confirmed session renew; the session is bound to it.",
                "TTL": self._config.ttl_text,
                # Critical until a gated pass vouches for it (an existing check keeps its status).
                "Status": "critical",
                # A crashed sidecar's own service would otherwise stay, critical, for ever.
                "DeregisterCriticalServiceAfter": LEASE_SERVICE_REAP_AFTER,
            },
        }
        self._client.call(
            "PUT", "/v1/agent/service/register", json_body=body, timeout=self._timeout()
        )
        self._mark(self._lease_check_id)

    def _register_role_check(self, target: str, check_id: str) -> None:
        body = {
            "ID": check_id,
            "Name": "consul-leader role confirmed",
            "ServiceID": target,
            "Notes": "Critical when the consul-leader sidecar cannot confirm this instance's role.",
            "TTL": self._role_ttl_text,
            "Status": "critical",
        }
        reply = self._client.call(
            "PUT",
            "/v1/agent/check/register",
            json_body=body,
            timeout=self._timeout(),
            allow=(404,),
        )
        if reply.status == 200:
            self._mark(check_id)

    def _try(self, method: str, path: str, timeout: float) -> None:
        try:
            self._client.call(method, path, timeout=timeout, allow=(404,))
        except ConsulError as exc:
            log.warning("cleanup request failed", extra={"error": str(exc)})

    def _timeout(self) -> float:
        return max(0.5, min(5.0, self._config.renew_interval))
