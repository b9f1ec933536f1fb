"""The composition root: builds every adapter around one machine, runs it, shuts it down.

The only module that knows every adapter. Adapters never talk to each other: each gets the
Consul port, the controller's `post` and its own settings; the effects hub drives them all.

Shutdown order (DESIGN §3): the machine leaves Leader (labels back to replica, leader file
removed, demote hook), then the key is released (no lock-delay for the next leader), then
the session is destroyed, then our checks are removed; all within a few seconds, because
Nomad sends SIGKILL 5 s after SIGTERM by default.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from prometheus_client import CollectorRegistry

from consul_leader.adapters.config import MAX_HOLD_OFF_NS, PUBLISH_REGISTRATION, Config
from consul_leader.adapters.consul.http import HttpConsul
from consul_leader.adapters.consul.port import ConsulPort, SessionSpec
from consul_leader.adapters.consul.transport import ConsulClient
from consul_leader.adapters.controller import Controller
from consul_leader.adapters.durations import SECOND
from consul_leader.adapters.effects import Drivers, HubSettings, RoleEffects
from consul_leader.adapters.election.acquirer import Acquirer, AcquirerSettings
from consul_leader.adapters.election.health_gate import GateSettings, HealthGate
from consul_leader.adapters.election.key import LockHolder, hint_key
from consul_leader.adapters.election.session import (
    FatalConfigError,
    KeeperSettings,
    SessionKeeper,
)
from consul_leader.adapters.election.switchover import Answer, Switchover, SwitchoverSettings
from consul_leader.adapters.election.watcher import LockWatcher, WatcherSettings
from consul_leader.adapters.hooks import HookRunner, LeaderFile
from consul_leader.adapters.observability.metrics import Metrics
from consul_leader.adapters.observability.status_server import (
    StatusServer,
    StatusSnapshot,
    WritePaths,
)
from consul_leader.adapters.observability.write_auth import BearerGate, Denial
from consul_leader.adapters.publishing.checks import ChecksSettings, HealthChecks
from consul_leader.adapters.publishing.labels import ALIAS_CHECK_PREFIX, Role
from consul_leader.adapters.publishing.publisher import Publisher, PublisherSettings
from consul_leader.adapters.threads import Step, Worker
from consul_leader.fsm.machine import LeaderMachine
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.table import edges
from consul_leader.fsm.timing import Timings

log = logging.getLogger("consul_leader")


def instance_name(config: Config) -> str:
    """Stable across restarts of the same task, so a restart takes over its own checks."""
    if config.alloc_id:
        return config.alloc_id
    if config.service_ids:
        return config.service_ids[0]
    return f"{socket.gethostname()}-{os.getpid()}"


def timings_of(config: Config) -> Timings:
    return Timings(ttl=config.ttl, renew_interval=config.renew_interval,
                   watch_wait=config.watch_wait, lock_delay=config.lock_delay)


class Sidecar:
    def __init__(self, config: Config, version: str, revision: str = "unknown",
                 registry: CollectorRegistry | None = None) -> None:
        """Build every adapter; nothing talks to Consul before ``start()``.

        The status server binds first, so a busy listen address raises ``ListenError`` before
        any other part exists.
        """
        self.config = config
        self.timings = timings = timings_of(config)
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry, states=[s.value for s in State], initial_state=State.NO_SESSION.value,
            transitions=sorted((s.value, d.value, e.value) for s, d, e in edges()),
            events=[e.value for e in Event],
            version=version,
            revision=revision,
        )
        self.write_gate = BearerGate(config.http_writes, config.http_token_file)
        self.status_server = (StatusServer(config.listen, self.registry, self.snapshot,
                                           WritePaths(self._authorize, self._switchover))
                              if config.listen else None)
        self.client = ConsulClient(config.consul, observer=self.metrics.consul_request,
                                   connect_timeout=timings.request_timeout)
        port: ConsulPort = HttpConsul(self.client)
        self.controller = Controller(heartbeat_period=timings.heartbeat_period,
                                     wedged_after=timings.wedged_after)
        self.metrics.priority(config.priority)
        self._workers: list[Worker] = []
        self._started = False
        self._build_adapters(port)
        self.leader_file = LeaderFile(config.leader_file)
        self.effects = RoleEffects(
            HubSettings(key=config.key, timings=timings, on_promote=config.on_promote,
                        on_demote=config.on_demote),
            Drivers(keeper=self.keeper, acquirer=self.acquirer, watcher=self.watcher,
                    publisher=self.publisher, checks=self.checks,
                    leader_file=self.leader_file, hooks=self.hooks,
                    metrics=self.metrics, gate=self.gate),
        )
        self.metrics.health_gate(self.effects.application_health)
        self.controller.attach(LeaderMachine(self.effects))

    def _build_adapters(self, port: ConsulPort) -> None:
        config, timings, post = self.config, self.timings, self.controller.post
        holder = LockHolder(host=socket.gethostname(), service=config.service_name,
                            alloc_id=config.alloc_id)
        owner = instance_name(config) if config.publish == PUBLISH_REGISTRATION else None
        self.checks = HealthChecks(
            ChecksSettings(enabled=config.health_check, instance=instance_name(config),
                           service_name=config.service_name, kv_path=config.kv_path,
                           ttl_text=config.ttl_text, timings=timings, owner=owner,
                           bind_alias=config.health_gate), port, post)
        self.keeper = SessionKeeper(
            KeeperSettings(
                session=SessionSpec(name=config.session_name, ttl=config.ttl_text,
                                    lock_delay=config.lock_delay_text, node=config.node_name),
                kv_path=config.kv_path, holder=holder, timings=timings,
                node_to_verify=config.node_name if config.health_check else None,
                application_check_prefix=ALIAS_CHECK_PREFIX if config.health_gate else None),
            port, post, on_renewed=self.metrics.session_renewed,
            on_renew_failed=self.metrics.session_renew_failed)
        self.watcher = LockWatcher(WatcherSettings(config.kv_path, timings), port, post)
        instance = instance_name(config)
        peers = (config.published_name or config.service_name) if owner is not None else None
        self.acquirer = Acquirer(
            AcquirerSettings(config.kv_path, holder, timings, priority=config.priority,
                             instance=instance, peers=peers, hint_key=hint_key(config.kv_path)),
            port, post, on_attempt=self.metrics.acquire_attempt)
        self.switchover = Switchover(
            SwitchoverSettings(instance=instance, peers=peers or config.service_name,
                               timings=timings, default_hold_off=config.hold_off,
                               max_hold_off=MAX_HOLD_OFF_NS / SECOND),
            port, post, state=lambda: self.controller.state, on_result=self.metrics.switchover)
        self.acquirer.on_released = self.switchover.released
        self.publisher = Publisher(
            PublisherSettings(service_ids=config.service_ids, alloc_id=config.alloc_id,
                              service_name=config.service_name,
                              primary_label=config.primary_label,
                              replica_label=config.replica_label, timings=timings,
                              owner=owner, published_name=config.published_name,
                              role_check=config.health_check, priority=config.priority),
            port, post, on_write=self.metrics.tag_write, spawn_watch=self._watch_target,
            on_evicted=self.metrics.stale_primary_evicted)
        self.hooks = HookRunner(config.hook_timeout, on_result=self.metrics.hook_run)
        self.gate = self._build_gate(port) if config.health_gate else None
        self.keeper.wake = self._worker("session-keeper", self.keeper.step).poke
        self.watcher.wake_confirm = self._worker("lock-confirm", self.watcher.confirm_step).poke
        self._worker("lock-watcher", self.watcher.watch_step)
        self.acquirer.wake = self._worker("acquirer", self.acquirer.step).poke
        self._publisher_worker = self._worker("publisher", self.publisher.step)
        self.publisher.wake = self._publisher_worker.poke
        self.checks.wake = self._worker("check-passer", self.checks.step).poke

    def _authorize(self, authorization: str) -> Denial | None:
        denial = self.write_gate.check(authorization)
        if denial is not None:
            self.metrics.switchover("denied")
        return denial

    def _switchover(self, to: str | None, hold_off: str | None) -> Answer:
        return self.switchover.request(to, hold_off)

    def _build_gate(self, port: ConsulPort) -> HealthGate:
        gate = HealthGate(GateSettings(self.timings, alias_check_prefix=ALIAS_CHECK_PREFIX),
                          port, self.controller.post,
                          spawn_watch=self._watch_health)
        gate.wake = self._worker("health-gate", gate.step).poke
        return gate

    def _watch_health(self, name: str) -> None:
        gate = self.gate
        assert gate is not None
        self._worker(f"health-{name[:40]}", lambda: gate.watch_step(name))

    def _worker(self, name: str, step: Step) -> Worker:
        worker = Worker(name, step, restart_pause=self.timings.retry_cap)
        self._workers.append(worker)
        if self._started:
            worker.start()
        return worker

    def _watch_target(self, target: str) -> None:
        self._worker(f"watch-{target[:40]}", lambda: self.publisher.watch_step(target))

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        # A run killed while leading (SIGKILL, OOM, crash) left its leader file: this run
        # leads nothing yet, and the application must not go on acting as the leader.
        if self.leader_file.remove_leftover():
            log.warning("removed the leader file an earlier run left behind",
                        extra={"path": self.leader_file.path})
        if self.status_server is not None:
            self.status_server.start()
        self.controller.start()
        self._started = True
        for worker in list(self._workers):
            worker.start()
        log.info("started", extra={"consul": self.config.consul.base_url,
                                   "token_source": self.client.token_source})
        if self.config.http_writes and self.config.http_token_file is None:
            log.warning("HTTP write paths are on without CONSUL_LEADER_HTTP_TOKEN_FILE: anyone "
                        "who reaches the listen address may ask for a switchover")
        if self.config.lock_delay < self.config.ttl:
            # Consul's view stays safe either way; this is about what sidecars believe.
            log.info("lock-delay is below the TTL: after a node is lost or cut off, its old "
                     "leader may believe it leads until its own deadline (at most TTL) while "
                     "another instance already leads; set CONSUL_LEADER_LOCKDELAY to the TTL "
                     "to rule that out", extra={"lock_delay": self.config.lock_delay_text,
                                                "ttl": self.config.ttl_text})

    @property
    def fatal(self) -> FatalConfigError | None:
        return self.keeper.fatal

    def machine_stopped(self) -> bool:
        """The machine took `shutdown` on its own (a fatal configuration error)."""
        return self.controller.finished(0)

    def shutdown(self) -> None:
        """Leave cleanly, in DESIGN §3's order, within the shutdown budget."""
        deadline = time.monotonic() + self.timings.shutdown_budget
        shares = _ShutdownShares(self.timings.shutdown_budget)

        def left(share: float) -> float:
            return max(self.timings.min_request_timeout,
                       min(share, deadline - time.monotonic()))

        self.controller.post(Event.SHUTDOWN, reason="stopping")
        self.controller.finished(left(shares.machine))
        for adapter in (self.keeper, self.acquirer, self.watcher):
            adapter.stop()
        if self.gate is not None:
            self.gate.stop()
        if not self.publisher.wait_published(Role.REPLICA, left(shares.labels)):
            log.error("could not clear the primary label before leaving")
        self.keeper.release_and_destroy(left(shares.session))
        self.checks.stop()
        self.publisher.stop()
        self._publisher_worker.join(left(shares.checks))  # no write may follow the withdrawal
        self.publisher.withdraw(left(shares.checks))
        self.checks.deregister_all(left(shares.checks))
        for worker in self._workers:
            worker.stop()
        self.hooks.drain(left(shares.hooks))
        if self.status_server is not None:
            self.status_server.stop()
        self.client.close()
        log.info("stopped")

    # -- status ---------------------------------------------------------------------------

    def snapshot(self) -> StatusSnapshot:
        observation = self.watcher.last
        state, since = self.controller.shown()
        leading = state is State.LEADER
        return StatusSnapshot(
            state=state.value,
            since=since,
            session=self.controller.session,
            key=self.config.key,
            fencing_token=self.effects.fencing_token if leading else None,
            holder=observation.session if observation else None,
            last_renew_age=self.keeper.last_renew_age(),
            lease_remaining=self.keeper.lease_remaining(),
            loop_alive=self.controller.loop_alive(),
            published=self.effects.published if leading else False,
            priority=self.config.priority,
            excluded=self.acquirer.exclusion(),
            health_gate=self.effects.application_health,
            health_gate_reason=self.effects.application_reason,
        )


class _ShutdownShares:
    """How the shutdown budget is shared out between its steps (each may use less)."""

    def __init__(self, budget: float) -> None:
        self.machine = budget / 4
        self.labels = budget * 3 / 8
        self.session = budget / 4
        self.checks = budget / 8
        self.hooks = budget / 4
