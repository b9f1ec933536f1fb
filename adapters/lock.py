"""The lock key: a watcher on blocking queries and a lock-delay-aware acquirer.

The watcher turns what it sees of the key into observations (fsm.observation) as soon as the
key changes: a blocking GET returns within a round trip of a release, a deletion or a session
invalidation (consul-semantics §3). The acquirer runs `?acquire=` when the machine is a
Candidate, and when Consul says no, reads the key with `?consistent` to learn why before
waiting: another holder means we follow; no holder means a lock-delay is in force (§2.3
step 1), so we retry on a timer instead of hot-looping.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from consul_leader.adapters.config import Config
from consul_leader.adapters.consul import MALFORMED, ConsulClient, ConsulError, Reply, log_level
from consul_leader.adapters.threads import start_worker
from consul_leader.fsm.observation import KeyObservation, classify
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import lock_delay_wait, retry_delay

log = logging.getLogger("consul_leader.lock")

Post = Callable[..., None]
MIN_WATCH_INTERVAL = 0.05  # rate limit for watch loops whose index does not move (§3)


def observe(reply: Reply) -> KeyObservation:
    """A KV GET answer as an observation. Raises ValueError on an answer of the wrong shape."""
    if reply.status == 404:
        return KeyObservation(exists=False, modify_index=reply.index or 0)
    entries = reply.json()
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ValueError("KV answer is not a list of entries")
    entry: dict[str, Any] = entries[0]
    raw = entry.get("Value")
    value = base64.b64decode(raw) if isinstance(raw, str) else None
    session = entry.get("Session")
    return KeyObservation(
        exists=True,
        session=session if isinstance(session, str) and session else None,
        lock_index=int(entry.get("LockIndex") or 0),
        modify_index=int(entry.get("ModifyIndex") or 0),
        value=value,
        flags=int(entry.get("Flags") or 0),
    )


def fencing_token(observation: KeyObservation) -> int:
    """The key's ModifyIndex as seen while we hold it: a Raft index, so it only grows from one
    holder to the next, even across a delete or a plain PUT of the key. LockIndex does not:
    a plain PUT resets it and a delete discards it (consul-semantics §2.3, §2.4)."""
    return observation.modify_index


def next_index(previous: int, reported: int | None) -> int:
    """Consul's advice for blocking loops: reset when the index goes backwards or is bogus."""
    if reported is None or reported < 1:
        return 0
    if reported < previous:
        return 0
    return reported


class LockWatcher:
    """Blocks on the key and posts what it sees, classified against our current session."""

    def __init__(self, config: Config, client: ConsulClient, post: Post,
                 session: Callable[[], str | None]) -> None:
        self._config = config
        self._client = client
        self._post = post
        self._session = session
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last: KeyObservation | None = None
        self._held_by: str | None = None  # holder in the latest observation, and when seen
        self._held_seen_at = float("-inf")

    @property
    def last(self) -> KeyObservation | None:
        with self._lock:
            return self._last

    def start(self) -> None:
        start_worker("lock-watcher", self._run, self._stop.is_set, self._stop.wait)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        index, failures = 0, 0
        wait = f"{int(self._config.watch_wait)}s"
        while not self._stop.is_set():
            started = time.monotonic()
            params = {"index": str(index), "wait": wait} if index else None
            try:
                reply = self._client.call(
                    "GET", f"/v1/kv/{self._config.kv_path}", params=params,
                    timeout=self._config.watch_wait * 1.1 + 5, allow=(404,),
                )
                observation = observe(reply)
            except (ConsulError, *MALFORMED) as exc:
                failures += 1
                level = log_level(exc) if isinstance(exc, ConsulError) else logging.WARNING
                # Transient faults are routine for a watch: retries are quiet unless they persist.
                if level == logging.WARNING and failures < 3:
                    level = logging.DEBUG
                log.log(level, "lock watch failed", extra={"error": str(exc)})
                self._stop.wait(retry_delay(failures, 10.0, base=0.2, cap=5.0))
                index = 0
                continue
            failures = 0
            new_index = next_index(index, reply.index)
            if new_index == index and time.monotonic() - started < MIN_WATCH_INTERVAL:
                self._stop.wait(MIN_WATCH_INTERVAL)
            index = new_index
            self._report(observation)

    def confirm(self, session: str, timeout: float, max_age: float) -> bool:
        """Is the key still held by `session`, as seen within the last `max_age` seconds?

        The leader asks this before each renew vouches for its role. The blocking watch
        answers at once when the key changes, but a slow or stuck watch would go on vouching
        for a key we lost; so when nothing has shown the key ours for `max_age`, read it with
        ?consistent (what it sees is posted like any observation). Raises ConsulError (or a
        MALFORMED error) when Consul cannot say."""
        with self._lock:
            fresh = (self._held_by, time.monotonic() - self._held_seen_at)
        if fresh[0] == session and fresh[1] <= max_age:
            return True
        reply = self._client.call("GET", f"/v1/kv/{self._config.kv_path}",
                                  params={"consistent": ""}, timeout=timeout, allow=(404,))
        observation = observe(reply)
        self._report(observation)
        return observation.session == session

    def _report(self, observation: KeyObservation) -> None:
        with self._lock:
            self._last = observation
            self._held_by = observation.session
            self._held_seen_at = time.monotonic()
        session = self._session()
        if session is None:
            return
        event = classify(observation, session)
        self._post(event, reason=_describe(observation), session=session,
                   **_facts(event, observation))


def _facts(event: Event, observation: KeyObservation) -> dict[str, object]:
    """What goes with an observed event: the observation, and our fencing token if ours."""
    if event is Event.LOCK_HELD_BY_US:
        return {"observation": observation, "fencing_token": fencing_token(observation)}
    return {"observation": observation}


def _describe(observation: KeyObservation) -> str:
    if not observation.exists:
        return "lock key missing"
    if observation.session is None:
        return "lock key has no holder"
    return f"lock key held by {observation.session}"


class Acquirer:
    """Runs acquire attempts for a Candidate, one at a time, in its own thread."""

    def __init__(self, config: Config, client: ConsulClient, post: Post,
                 session: Callable[[], str | None], campaigning: Callable[[], bool],
                 targets: Callable[[], list[str]],
                 on_attempt: Callable[[str], None] = lambda result: None) -> None:
        self._config = config
        self._client = client
        self._post = post
        self._session = session
        self._campaigning = campaigning
        self._targets = targets
        self._on_attempt = on_attempt
        self._cond = threading.Condition()
        self._requested = False
        self._reassert = False
        self._stopping = False

    def start(self) -> None:
        start_worker("acquirer", self._run, lambda: self._stopping)

    def campaign(self) -> None:
        with self._cond:
            self._requested = True
            self._cond.notify_all()

    def reassert(self) -> None:
        """As leader, write our value back with our own session (LockIndex unchanged, §2.3)."""
        with self._cond:
            self._reassert = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def value_for(self, session: str) -> bytes:
        """What the leader writes into the key: who holds it, for people and tools."""
        return json.dumps({
            "session": session,
            "host": socket.gethostname(),
            "alloc_id": self._config.alloc_id,
            "service_ids": self._targets(),
        }, sort_keys=True).encode()

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not (self._requested or self._reassert) and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                reassert, self._reassert = self._reassert, False
                requested, self._requested = self._requested, False
            session = self._session()
            if session is None:
                continue
            if reassert:
                self._rewrite_value(session)
            if not (requested and self._campaigning()):
                continue
            retry_in = self._attempt(session, attempt)
            if retry_in is None:
                attempt = 0
                continue
            attempt += 1
            with self._cond:
                self._cond.wait(retry_in)
                self._requested = True

    def _attempt(self, session: str, attempt: int) -> float | None:
        """One acquire; posts the outcome. Returns how long to wait before retrying, if at all."""
        path = f"/v1/kv/{self._config.kv_path}"
        try:
            reply = self._client.call("PUT", path, params={"acquire": session},
                                      data=self.value_for(session), timeout=5.0)
            acquired = reply.json() is True
            if acquired:
                fencing = fencing_token(self._read(path))
                self._on_attempt("acquired")
                self._post(Event.LOCK_ACQUIRED, reason="acquire answered true",
                           session=session, fencing_token=fencing)
                return None
            observation = self._read(path)
        except ConsulError as exc:
            if "invalid session" in (exc.body or ""):
                self._on_attempt("invalid_session")
                self._post(Event.SESSION_LOST, reason="acquire: Consul says the session is invalid",
                           session=session)
                return None
            self._on_attempt("error")
            log.log(log_level(exc), "acquire failed", extra={"error": str(exc)})
            return max(1.0 if log_level(exc) == logging.ERROR else 0.0,
                       retry_delay(attempt, 10.0))
        except MALFORMED as exc:
            self._on_attempt("error")
            log.warning("acquire: unexpected answer", extra={"error": str(exc)})
            return retry_delay(attempt, 10.0)
        return self._after_refusal(session, observation, attempt)

    def _after_refusal(self, session: str, observation: KeyObservation,
                       attempt: int) -> float | None:
        event = classify(observation, session)
        if event is Event.LOCK_FREE:
            # No holder, yet Consul said no: a lock-delay is in force. Wait on a timer.
            self._on_attempt("lock_delay")
            self._post(Event.LOCK_DELAYED, reason="acquire refused: lock-delay in force",
                       session=session)
            return lock_delay_wait(self._config.lock_delay, attempt)
        if event is Event.KEY_MISSING:
            self._on_attempt("error")
            return 0.05  # deleted between our acquire and our read: just try again
        self._on_attempt("held" if event is Event.LOCK_HELD_BY_OTHER else "acquired")
        self._post(event, reason=_describe(observation), session=session,
                   **_facts(event, observation))
        return None

    def _rewrite_value(self, session: str) -> None:
        try:
            self._client.call("PUT", f"/v1/kv/{self._config.kv_path}",
                              params={"acquire": session}, data=self.value_for(session),
                              timeout=5.0)
        except (ConsulError, *MALFORMED) as exc:
            log.warning("could not write the lock value back", extra={"error": str(exc)})

    def _read(self, path: str) -> KeyObservation:
        # Ownership is decided here, so ask the leader to confirm it is still the leader.
        reply = self._client.call("GET", path, params={"consistent": ""}, timeout=5.0,
                                  allow=(404,))
        return observe(reply)
