"""What a client of the service sees: Consul's health view of the passing primaries, over time.

`HealthWatch` keeps one blocking query open on
`/v1/health/service/<name>?tag=<primary>&passing` through an observer node that hosts no
instance (so its requests never mix with an instance's counts) and timestamps every answer on
the monotonic clock when it arrives. A blocking query answers within a round trip of a change,
so "first seen" is the change plus one loopback round trip, never earlier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

BLOCK_WAIT = "2s"  # short, so the thread notices a stop quickly
RETRY_PAUSE = 0.05  # after an error (servers down, stand-in closing)


@dataclass(frozen=True)
class Seen:
    at: float
    primaries: frozenset[str]


class HealthWatch:
    def __init__(self, agent: str, service: str, label: str = "primary") -> None:
        self._url = f"{agent}/v1/health/service/{service}"
        self._label = label
        self._cond = threading.Condition()
        self._timeline: list[Seen] = []
        self._stopping = threading.Event()
        self._http = requests.Session()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._http.close()

    @property
    def timeline(self) -> list[Seen]:
        with self._cond:
            return list(self._timeline)

    def latest(self) -> Seen | None:
        with self._cond:
            return self._timeline[-1] if self._timeline else None

    def wait(self, condition: Callable[[frozenset[str]], bool], since: float,
             timeout: float) -> Seen | None:
        """The first answer at or after `since` whose primaries satisfy `condition`, waiting
        up to `timeout` seconds; None when none came in time."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for seen in self._timeline[checked:]:
                    if seen.at >= since and condition(seen.primaries):
                        return seen
                checked = len(self._timeline)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def overlaps(self, since: float, until: float) -> list[tuple[float, float]]:
        """Spans (first seen, next answer) in [since, until] during which the health view
        listed more than one passing primary."""
        timeline = self.timeline
        spans = []
        for position, seen in enumerate(timeline):
            if since <= seen.at <= until and len(seen.primaries) > 1:
                following = timeline[position + 1].at if position + 1 < len(timeline) else until
                spans.append((seen.at, following))
        return spans

    def seconds_without_primary(self, since: float, until: float) -> float:
        """How long within [since, until] the health view listed no passing primary, from
        the answer in force at `since` on."""
        timeline = self.timeline
        total = 0.0
        for position, seen in enumerate(timeline):
            following = timeline[position + 1].at if position + 1 < len(timeline) else until
            start, end = max(seen.at, since), min(following, until)
            if end > start and not seen.primaries:
                total += end - start
        return total

    def _run(self) -> None:
        index = "0"
        while not self._stopping.is_set():
            try:
                reply = self._http.get(
                    self._url,
                    params={"tag": self._label, "passing": "1", "index": index,
                            "wait": BLOCK_WAIT},
                    timeout=10,
                )
                arrived = time.monotonic()
                reply.raise_for_status()
                primaries = frozenset(entry["Service"]["ID"] for entry in reply.json())
            except (requests.RequestException, ValueError, KeyError):
                index = "0"
                self._stopping.wait(RETRY_PAUSE)
                continue
            index = reply.headers.get("X-Consul-Index", "0")
            with self._cond:
                if not self._timeline or self._timeline[-1].primaries != primaries:
                    self._timeline.append(Seen(arrived, primaries))
                self._cond.notify_all()
