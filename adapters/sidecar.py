"""The composition root: builds every adapter around one machine, runs it, shuts it down.

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

from consul_leader.adapters.checks import HealthChecks
from consul_leader.adapters.config import Config
from consul_leader.adapters.consul import ConsulClient, ConsulError
from consul_leader.adapters.controller import Controller
from consul_leader.adapters.effects import RoleEffects
from consul_leader.adapters.hooks import HookRunner, LeaderFile
from consul_leader.adapters.lock import Acquirer, LockWatcher
from consul_leader.adapters.metrics import Metrics
from consul_leader.adapters.session import FatalConfigError, SessionKeeper
from consul_leader.adapters.status_server import StatusServer, StatusSnapshot
from consul_leader.adapters.tagger import Role, ServiceTagger
from consul_leader.fsm.machine import LeaderMachine
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.table import edges

log = logging.getLogger("consul_leader")

SHUTDOWN_BUDGET = 4.0  # seconds, inside Nomad's default 5 s kill timeout


def instance_name(config: Config) -> str:
    """Stable across restarts of the same task, so a restart takes over its own checks."""
    if config.alloc_id:
        return config.alloc_id
    if config.service_ids:
        return config.service_ids[0]
    return f"{socket.gethostname()}-{os.getpid()}"


class Sidecar:
    def __init__(self, config: Config, version: str, revision: str = "unknown",
                 registry: CollectorRegistry | None = None) -> None:
        """Build every adapter; nothing talks to Consul before ``start()``.

        The status server binds first, so a busy listen address raises ``ListenError`` before
        any other part exists.
        """
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry, states=[s.value for s in State], initial_state=State.NO_SESSION.value,
            transitions=sorted((s.value, d.value, e.value) for s, d, e in edges()),
            events=[e.value for e in Event],
            version=version,
            revision=revision,
        )
        self.status_server = (StatusServer(config.listen, self.registry, self.snapshot)
                              if config.listen else None)
        self.client = ConsulClient(config.consul, observer=self.metrics.consul_request)
        self.controller = Controller()
        post = self.controller.post
        self.tagger = ServiceTagger(
            config, self.client, lease_valid=lambda: self.keeper.lease_valid(),
            on_write=self.metrics.tag_write,
            on_target_registered=lambda target: self.checks.forget(target),
            on_cannot_publish=lambda reason: self.keeper.drop(
                f"cannot publish the primary label: {reason}"),
        )
        self.checks = HealthChecks(config, self.client, instance_name(config),
                                   self.tagger.targets)
        self.keeper = SessionKeeper(
            config, self.client, post, self.checks,
            untag_confirmed=lambda: self.tagger.confirmed(Role.REPLICA)
            and self.tagger.publishable(),
            confirm_role=self._confirm_role,
            on_renewed=self.metrics.session_renewed,
            on_renew_failed=self.metrics.session_renew_failed,
        )
        self.watcher = LockWatcher(config, self.client, post, lambda: self.keeper.session)
        self.acquirer = Acquirer(
            config, self.client, post, lambda: self.keeper.session,
            campaigning=lambda: self.controller.state is State.CANDIDATE,
            targets=self.tagger.targets, on_attempt=self.metrics.acquire_attempt,
        )
        self.hooks = HookRunner(config.hook_timeout, on_result=self.metrics.hook_run)
        self.effects = RoleEffects(
            key=config.key, keeper=self.keeper, tagger=self.tagger, acquirer=self.acquirer,
            leader_file=LeaderFile(config.leader_file), hooks=self.hooks,
            on_promote=config.on_promote, on_demote=config.on_demote, metrics=self.metrics,
        )
        self.effects.controller = self.controller
        self.controller.attach(LeaderMachine(self.effects))

    def _confirm_role(self, session: str, timeout: float) -> bool:
        """May this renew's health-check round vouch for our role? Followers and candidates
        publish only the replica label, which is never harmful; a leader must still hold
        the key right now."""
        if self.controller.state is not State.LEADER:
            return True
        # Re-reading at most once per TTL keeps a leader's server-bound load below the old
        # polling loop's; the new leader's own check (tagger) covers the rest of the window.
        return self.watcher.confirm(session, timeout, max_age=self.config.ttl)

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        if self.status_server is not None:
            self.status_server.start()
        self.controller.start()
        self.tagger.start()
        self.keeper.start()
        self.watcher.start()
        self.acquirer.start()
        log.info("started", extra={"consul": self.config.consul.base_url,
                                   "token_source": self.client.token_source})
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
        """Leave cleanly, in DESIGN §3's order, within SHUTDOWN_BUDGET seconds."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET

        def left(cap: float) -> float:
            return max(0.1, min(cap, deadline - time.monotonic()))

        self.controller.post(Event.SHUTDOWN, reason="stopping")
        self.controller.finished(left(1.0))
        self.keeper.stop()
        self.acquirer.stop()
        self.watcher.stop()
        if not self.tagger.wait_confirmed(Role.REPLICA, left(1.5)):
            log.error("could not clear the primary label before leaving")
        self.keeper.join(left(0.5))
        try:
            self.keeper.release_and_destroy(self.config.kv_path, left(1.0))
        except ConsulError as exc:
            log.error("could not release the lock or destroy the session",
                      extra={"error": str(exc)})
        self.checks.stop()
        self.checks.deregister_all(left(0.5))
        self.tagger.stop()
        self.hooks.drain(left(1.0))
        if self.status_server is not None:
            self.status_server.stop()
        self.client.close()
        log.info("stopped")

    # -- status ---------------------------------------------------------------------------

    def snapshot(self) -> StatusSnapshot:
        observation = self.watcher.last
        return StatusSnapshot(
            state=self.controller.state.value,
            since=self.controller.since,
            session=self.keeper.session,
            key=self.config.key,
            fencing_token=self.effects.fencing_token
            if self.controller.state is State.LEADER else None,
            holder=observation.session if observation else None,
            last_renew_age=self.keeper.last_renew_age(),
            lease_remaining=self.keeper.lease_remaining(),
            loop_alive=self.controller.loop_alive(),
            published=self.tagger.confirmed(Role.PRIMARY),
        )
