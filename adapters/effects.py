"""The machine's side effects (the fsm.machine.Effects port), carried out by the adapters.

Side effects belong to states: Leader publishes the primary label, the leader file and the
promote hook; every other state publishes the replica label (when one is set), no leader
file, and runs the demote hook when it leaves Leader. Effects only hand work to the
adapters' own threads, so the controller never blocks on Consul.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from consul_leader.adapters.controller import Posted
from consul_leader.adapters.hooks import HookRunner, LeaderFile
from consul_leader.adapters.lock import Acquirer
from consul_leader.adapters.metrics import Metrics
from consul_leader.adapters.session import SessionKeeper
from consul_leader.adapters.tagger import Role, ServiceTagger
from consul_leader.fsm.machine import Transition
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event, State

log = logging.getLogger("consul_leader")


class ControllerView(Protocol):
    @property
    def current(self) -> Posted | None: ...
    def forget_session(self) -> None: ...


class RoleEffects:
    def __init__(self, *, key: str, keeper: SessionKeeper, tagger: ServiceTagger,
                 acquirer: Acquirer, leader_file: LeaderFile, hooks: HookRunner,
                 on_promote: str | None, on_demote: str | None, metrics: Metrics) -> None:
        self._key = key
        self._keeper = keeper
        self._tagger = tagger
        self._acquirer = acquirer
        self._leader_file = leader_file
        self._hooks = hooks
        self._on_promote = on_promote
        self._on_demote = on_demote
        self._metrics = metrics
        self.controller: ControllerView | None = None
        self.fencing_token: int | None = None
        self.leader_since: float | None = None

    # -- the Effects port -----------------------------------------------------------------

    def transitioned(self, t: Transition) -> None:
        self._metrics.transition(t.source.value, t.dest.value, t.event.value)
        if t.internal:
            log.debug("event", extra=self._fields(t))
            self._maybe_reassert(t)
            return
        level = logging.WARNING if State.LEADER in (t.source, t.dest) else logging.INFO
        log.log(level, "transition", extra=self._fields(t))

    def refused(self, state: State, event: Event, reason: str) -> None:
        self._metrics.refused(state.value, event.value)
        log.debug("event refused", extra={"state": state.value, "event": event.value,
                                          "reason": reason})

    def enter_no_session(self, t: Transition) -> None:
        if self.controller is not None:
            self.controller.forget_session()
        self._tagger.request(Role.REPLICA, None)
        if t.event is Event.SHUTDOWN:
            return  # the shutdown sequence releases and destroys; no new session
        self._keeper.want_session()

    def enter_candidate(self, t: Transition) -> None:
        self._tagger.request(Role.REPLICA, self._keeper.session)
        self._acquirer.campaign()

    def enter_follower(self, t: Transition) -> None:
        self._tagger.request(Role.REPLICA, self._keeper.session)

    def enter_leader(self, t: Transition) -> None:
        session = self._keeper.session
        self.fencing_token = self._fact("fencing_token")
        self.leader_since = time.time()
        if self.fencing_token is not None:
            self._metrics.fencing_token(self.fencing_token)
        self._tagger.request(Role.PRIMARY, session)
        self._leader_file.write({
            "session": session, "key": self._key, "fencing_token": self.fencing_token,
            "since": self.leader_since,
        })
        self._hooks.submit("promote", self._on_promote, self._hook_env("primary", session))

    def exit_leader(self, t: Transition) -> None:
        self._leader_file.remove()
        self.leader_since = None
        self._hooks.submit("demote", self._on_demote,
                           self._hook_env("replica", self._keeper.session))

    # -- helpers --------------------------------------------------------------------------

    def _facts(self) -> Mapping[str, Any]:
        """What the adapter that posted the event being handled observed along with it."""
        current = self.controller.current if self.controller is not None else None
        return current.facts if current is not None else {}

    def _fact(self, name: str) -> int | None:
        value = self._facts().get(name)
        return value if isinstance(value, int) else None

    def _maybe_reassert(self, t: Transition) -> None:
        """The leader's key value was overwritten by someone else: write ours back."""
        if t.dest is not State.LEADER or t.event is not Event.LOCK_HELD_BY_US:
            return
        observation = self._facts().get("observation")
        session = self._keeper.session
        if isinstance(observation, KeyObservation) and session is not None \
                and observation.value != self._acquirer.value_for(session):
            self._acquirer.reassert()

    def _hook_env(self, role: str, session: str | None) -> dict[str, str]:
        return {
            "CONSUL_LEADER_ROLE": role,
            "CONSUL_LEADER_SESSION": session or "",
            "CONSUL_LEADER_FENCING_TOKEN": "" if self.fencing_token is None
            else str(self.fencing_token),
            "CONSUL_LEADER_LOCK_KEY": self._key,
        }

    @staticmethod
    def _fields(t: Transition) -> dict[str, str]:
        return {"from": t.source.value, "to": t.dest.value, "event": t.event.value,
                "reason": t.reason}
