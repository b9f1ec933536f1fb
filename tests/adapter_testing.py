"""Test support for the adapters: a strict fake of the Consul port, a fake clock, and a
recorder of posted events. Not used at runtime.

`StrictPort` answers only what the test scripted. `expect(...)` queues one answer for the next
call, in order; `always(...)` gives a standing answer to every call of one method. Any other
call raises `UnexpectedCall` (an AssertionError, which no adapter catches) and is remembered,
so `assert_done()` fails the test even if something swallowed it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from consul_leader.adapters.consul.port import (
    HealthEntry,
    HealthRead,
    KeyRead,
    ServiceRead,
    ServicesRead,
    SessionSpec,
)
from consul_leader.adapters.consul.transport import Reply, endpoint_template, sort_answer
from consul_leader.fsm.facts import NO_FACTS, Facts
from consul_leader.fsm.observation import KeyObservation
from consul_leader.fsm.states import Event
from consul_leader.fsm.timing import Timings

# The end-to-end ratios, as in tests/integration (TTL 3 s, SLEEP 1).
TIMINGS = Timings(ttl=3.0, renew_interval=1.0, watch_wait=300.0, lock_delay=0.0)
KEY = "consul-leader/db/lock"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class UnexpectedCall(AssertionError):
    """The adapter called the port in a way the test did not script."""


@dataclass(frozen=True)
class Call:
    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


Answer = Any  # a value to return, an exception to raise, or a callable(call) -> value


@dataclass
class _Expected:
    method: str
    answer: Answer
    check: Callable[[Call], bool] | None = None
    advance: float = 0.0  # the call takes this long (on the fake clock)


@dataclass
class StrictPort:
    """A `ConsulPort` that fails the test on any call it was not told to expect."""

    clock: FakeClock | None = None
    calls: list[Call] = field(default_factory=list)
    unexpected: list[Call] = field(default_factory=list)
    _queue: deque[_Expected] = field(default_factory=deque)
    _standing: dict[str, Answer] = field(default_factory=dict)

    def expect(self, method: str, answer: Answer = None, *,
               check: Callable[[Call], bool] | None = None, takes: float = 0.0) -> StrictPort:
        self._queue.append(_Expected(method, answer, check, takes))
        return self

    def always(self, method: str, answer: Answer) -> StrictPort:
        self._standing[method] = answer
        return self

    def assert_done(self) -> None:
        assert not self.unexpected, f"unexpected calls: {self.unexpected}"
        assert not self._queue, f"expected calls never made: {[e.method for e in self._queue]}"

    def names(self) -> list[str]:
        return [call.method for call in self.calls]

    def _answer(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = Call(method, args, kwargs)
        self.calls.append(call)
        if self._queue and self._queue[0].method == method:
            expected = self._queue.popleft()
            if expected.check is not None and not expected.check(call):
                self.unexpected.append(call)
                raise UnexpectedCall(f"{call} does not match what the test expected")
            if self.clock is not None:
                self.clock.advance(expected.advance)
            return _give(expected.answer, call)
        if method in self._standing:
            return _give(self._standing[method], call)
        self.unexpected.append(call)
        next_one = self._queue[0].method if self._queue else "nothing"
        raise UnexpectedCall(f"unexpected {call} (expected {next_one})")

    # -- the port ---------------------------------------------------------------------------

    def session_create(self, spec: SessionSpec, *, timeout: float) -> str:
        return self._answer("session_create", spec, timeout=timeout)

    def session_renew(self, session: str, *, timeout: float) -> bool:
        return self._answer("session_renew", session, timeout=timeout)

    def session_destroy(self, session: str, *, timeout: float) -> None:
        self._answer("session_destroy", session, timeout=timeout)

    def session_exists(self, session: str, *, timeout: float) -> bool:
        return self._answer("session_exists", session, timeout=timeout)

    def session_gone(self, session: str, *, timeout: float) -> bool:
        return self._answer("session_gone", session, timeout=timeout)

    def kv_get(self, key: str, *, timeout: float, index: int = 0, wait: str | None = None,
               consistent: bool = False) -> KeyRead:
        return self._answer("kv_get", key, timeout=timeout, index=index,
                            wait=wait, consistent=consistent)

    def kv_acquire(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        return self._answer("kv_acquire", key, session, value, timeout=timeout)

    def kv_release(self, key: str, session: str, value: bytes, *, timeout: float) -> bool:
        return self._answer("kv_release", key, session, value, timeout=timeout)

    def kv_put(self, key: str, value: bytes, *, timeout: float) -> bool:
        return self._answer("kv_put", key, value, timeout=timeout)

    def agent_service(self, service_id: str, *, timeout: float, hash: str | None = None,
                      wait: str | None = None) -> ServiceRead:
        return self._answer("agent_service", service_id, timeout=timeout,
                            hash=hash, wait=wait)

    def agent_services(self, *, timeout: float) -> ServicesRead:
        return self._answer("agent_services", timeout=timeout)

    def service_register(self, registration: Mapping[str, Any], *, timeout: float,
                         replace_existing_checks: bool = False) -> None:
        self._answer("service_register", registration, timeout=timeout,
                     replace_existing_checks=replace_existing_checks)

    def service_deregister(self, service_id: str, *, timeout: float) -> bool:
        return self._answer("service_deregister", service_id, timeout=timeout)

    def check_register(self, check: Mapping[str, Any], *, timeout: float) -> bool:
        return self._answer("check_register", check, timeout=timeout)

    def check_deregister(self, check_id: str, *, timeout: float) -> bool:
        return self._answer("check_deregister", check_id, timeout=timeout)

    def check_pass(self, check_id: str, note: str, *, timeout: float) -> bool:
        return self._answer("check_pass", check_id, note, timeout=timeout)

    def health_service(self, name: str, *, timeout: float, index: int = 0,
                       wait: str | None = None) -> HealthRead:
        blocking = {"index": index, "wait": wait} if index or wait else {}
        return self._answer("health_service", name, timeout=timeout, **blocking)

    def agent_node_name(self, *, timeout: float) -> str:
        return self._answer("agent_node_name", timeout=timeout)

    def catalog_deregister(self, node: str, service_id: str, *, timeout: float) -> None:
        return self._answer("catalog_deregister", node, service_id, timeout=timeout)


def _give(answer: Answer, call: Call) -> Any:
    if isinstance(answer, BaseException):
        raise answer
    if callable(answer):
        return answer(call)
    return answer


@dataclass(frozen=True)
class PostedEvent:
    event: Event
    reason: str
    facts: Facts


class Posts:
    """A `Post` that records every event, in order."""

    def __init__(self) -> None:
        self.items: list[PostedEvent] = []

    def __call__(self, event: Event, reason: str = "", facts: Facts = NO_FACTS) -> None:
        self.items.append(PostedEvent(event, reason, facts))

    def events(self) -> list[Event]:
        return [item.event for item in self.items]

    def last(self) -> PostedEvent:
        assert self.items, "nothing was posted"
        return self.items[-1]

    def clear(self) -> None:
        self.items.clear()


# -- answers ------------------------------------------------------------------------------------


def held(session: str | None, *, modify_index: int = 10, value: bytes | None = b"v",
         index: int | None = 10) -> KeyRead:
    """A read of the key held by `session` (None: free)."""
    return KeyRead(KeyObservation(exists=True, session=session, lock_index=1,
                                  modify_index=modify_index, value=value), index)


def missing(index: int | None = 10) -> KeyRead:
    return KeyRead(KeyObservation(exists=False, modify_index=index or 0), index)


def health(*entries: tuple[str, tuple[str, ...], bool], filtered: bool = False) -> HealthRead:
    """Instances as (service id, tags, passing)."""
    return HealthRead(tuple(HealthEntry(sid, "n1", tags, ("passing",) if ok else ("critical",))
                            for sid, tags, ok in entries), filtered)


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread (no threads in unit tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            if isinstance(exc, AssertionError):
                raise  # a strict-fake failure must fail the test, not hide in a future
            future.set_exception(exc)
        return future


@dataclass(frozen=True)
class Sent:
    """One request `HttpConsul` sent through a `FakeTransport`."""

    method: str
    path: str
    params: Mapping[str, str] | None
    data: bytes | None
    json_body: Any
    timeout: float


RawAnswer = tuple[int, bytes, Mapping[str, str]]  # status, body, headers


class FakeTransport:
    """Answers `HttpConsul`'s requests with raw HTTP answers, sorted like the real transport
    sorts them (2xx or allowed: a reply; 403, 429, 5xx, other 4xx: its error)."""

    def __init__(self, answer: Callable[[Sent], RawAnswer]) -> None:
        self._answer = answer
        self.sent: list[Sent] = []

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
             data: bytes | None = None, json_body: Any = None, timeout: float,
             allow: Collection[int] = ()) -> Reply:
        sent = Sent(method, path, params, data, json_body, timeout)
        self.sent.append(sent)
        status, body, headers = self._answer(sent)
        return sort_answer(method, endpoint_template(method, path), status, headers, body, allow)


def raw(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> RawAnswer:
    """An answer with a JSON body (bytes and str are sent as they are)."""
    content = body if isinstance(body, bytes) else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    return status, content, dict(headers or {})
