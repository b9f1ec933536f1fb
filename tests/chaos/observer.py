"""The observer: samples Consul's health view and every sidecar's /status every 50 ms.

One thread per source, so a paused sidecar (whose /status hangs until our timeout) never slows
down the sampling of the others or of Consul. Consul is asked through an agent that hosts no
sidecar (faults are injected on the sidecars' nodes), with `?stale` so a server outage shows
what the servers last agreed on instead of a gap; the stand-in has no replication lag, so a
stale read equals a consistent one while there is a leader.

Each listed instance is attributed to the sidecar whose allocation it names (its service ID
or a Meta value carries the allocation ID), not to one exact service ID: whatever
registration publishes the role, its instance counts for that allocation's sidecar.
Sidecars that join during the run (`discover`: a drain's replacement allocations) get a lane
and a sampler of their own from the next health sample on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.chaos.members import Member
from tests.chaos.timeline import EXITED, UNREACHABLE, HealthSample, StatusSample, Timeline

PERIOD = 0.05
HEALTH_TIMEOUT = 1.0
STATUS_TIMEOUT = 0.25


class Observer:
    def __init__(
        self,
        timeline: Timeline,
        health_url: str,
        primary_label: str,
        members: Callable[[], list[Member]],
        token: str | None = None,
        discover: Callable[[], list[Member]] | None = None,
    ) -> None:
        self.timeline = timeline
        self._health_url = health_url
        self._params = {"tag": primary_label, "passing": "", "stale": ""}
        self._headers = {"X-Consul-Token": token} if token else {}
        self._members = members
        self._discover = discover
        self._stop = threading.Event()
        self._threads_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._sample_health,),
                             name="observe-health", daemon=True),
            *(self._status_thread(m) for m in members()),
        ]

    def __enter__(self) -> Observer:
        with self._threads_lock:
            for thread in self._threads:
                thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(5)
        self.timeline.close()

    def caught_up(self, since: float) -> bool:
        """Every source has an answered sample sent at or after `since`."""
        timeline = self.timeline
        health = any(s.sent >= since for s in timeline.health[-5:])
        lanes = all(any(s.sent >= since for s in timeline.status[lane][-5:])
                    for lane in list(timeline.lanes))
        return health and lanes

    def _status_thread(self, member: Member) -> threading.Thread:
        return threading.Thread(target=self._loop, args=(self._status_sampler(member),),
                                name=f"observe-{member.name}", daemon=True)

    def _loop(self, sample: Callable[[requests.Session], None]) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                started = time.monotonic()
                sample(http)
                self._stop.wait(max(0.0, PERIOD - (time.monotonic() - started)))

    def _adopt_newcomers(self) -> None:
        if self._discover is None:
            return
        for member in self._discover():
            self.timeline.add_lane(member.name, member.label)
            thread = self._status_thread(member)
            with self._threads_lock:
                if self._stop.is_set():
                    return
                self._threads.append(thread)
                thread.start()

    def _sample_health(self, http: requests.Session) -> None:
        with contextlib.suppress(Exception):  # a failed look at Nomad must not end sampling
            self._adopt_newcomers()
        sent = time.monotonic()
        primaries: tuple[str, ...] | None = None
        with contextlib.suppress(requests.RequestException, ValueError, KeyError, TypeError):
            reply = http.get(self._health_url, params=self._params, headers=self._headers,
                             timeout=HEALTH_TIMEOUT)
            if reply.status_code == 200:
                entries = reply.json()
                self._learn_owners(entries)
                primaries = tuple(sorted(entry["Service"]["ID"] for entry in entries))
        self.timeline.record_health(HealthSample(sent, time.monotonic(), primaries))

    def _learn_owners(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            service = entry["Service"]
            if self.timeline.lane_of(service["ID"]) is not None:
                continue
            owner = next((m for m in self._members() if m.names_allocation(service)), None)
            if owner is not None:
                self.timeline.learn_owner(service["ID"], owner.name)

    def _status_sampler(self, member: Member) -> Callable[[requests.Session], None]:
        def sample(http: requests.Session) -> None:
            sent = time.monotonic()
            if not member.running():
                self.timeline.record_status(member.name, StatusSample(sent, sent, EXITED))
                return
            try:
                reply = http.get(f"http://127.0.0.1:{member.status_port}/status",
                                 timeout=STATUS_TIMEOUT)
                document = reply.json()
            except (requests.RequestException, ValueError):
                # A process that is starting up, paused, or too busy to answer.
                self.timeline.record_status(
                    member.name, StatusSample(sent, time.monotonic(), UNREACHABLE)
                )
                return
            self.timeline.record_status(
                member.name, self._status_sample(document, sent, time.monotonic())
            )

        return sample

    def _status_sample(self, document: dict[str, Any], sent: float,
                       received: float) -> StatusSample:
        since = document.get("since")
        return StatusSample(
            sent=sent,
            received=received,
            state=str(document.get("state")),
            since=self.timeline.to_monotonic(since) if isinstance(since, int | float) else None,
            session=document.get("session"),
            lease_remaining=document.get("lease_remaining"),
            last_renew_age=document.get("last_renew_age"),
            fencing_token=document.get("fencing_token"),
            published=document.get("published", True) is not False,
        )
