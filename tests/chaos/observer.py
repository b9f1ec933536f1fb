"""The observer: samples Consul's health view and every sidecar's /status every 50 ms.

One thread per source, so a paused sidecar (whose /status hangs until our timeout) never slows
down the sampling of the others or of Consul. Consul is asked through an agent that hosts no
sidecar (faults are injected on the sidecars' nodes), with `?stale` so a server outage shows
what the servers last agreed on instead of a gap; the stand-in has no replication lag, so a
stale read equals a consistent one while there is a leader.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.chaos.timeline import EXITED, UNREACHABLE, HealthSample, StatusSample, Timeline
from tests.harness import Sidecar

PERIOD = 0.05
HEALTH_TIMEOUT = 1.0
STATUS_TIMEOUT = 0.25


class Observer:
    def __init__(
        self,
        timeline: Timeline,
        health_url: str,
        primary_label: str,
        sidecars: list[Sidecar],
        token: str | None = None,
    ) -> None:
        self.timeline = timeline
        self._health_url = health_url
        self._params = {"tag": primary_label, "passing": "", "stale": ""}
        self._headers = {"X-Consul-Token": token} if token else {}
        self._sidecars = sidecars
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._sample_health,),
                             name="observe-health", daemon=True),
            *(
                threading.Thread(target=self._loop, args=(self._status_sampler(s),),
                                 name=f"observe-{s.name}", daemon=True)
                for s in sidecars
            ),
        ]

    def __enter__(self) -> Observer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(5)
        self.timeline.close()

    def caught_up(self, since: float) -> bool:
        """Every source has an answered sample sent at or after `since`."""
        timeline = self.timeline
        health = any(s.sent >= since for s in timeline.health[-5:])
        lanes = all(any(s.sent >= since for s in timeline.status[lane][-5:])
                    for lane in timeline.lanes)
        return health and lanes

    def _loop(self, sample: Callable[[requests.Session], None]) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                started = time.monotonic()
                sample(http)
                self._stop.wait(max(0.0, PERIOD - (time.monotonic() - started)))

    def _sample_health(self, http: requests.Session) -> None:
        sent = time.monotonic()
        primaries: tuple[str, ...] | None = None
        with contextlib.suppress(requests.RequestException, ValueError, KeyError, TypeError):
            reply = http.get(self._health_url, params=self._params, headers=self._headers,
                             timeout=HEALTH_TIMEOUT)
            if reply.status_code == 200:
                primaries = tuple(sorted(entry["Service"]["ID"] for entry in reply.json()))
        self.timeline.record_health(HealthSample(sent, time.monotonic(), primaries))

    def _status_sampler(self, sidecar: Sidecar) -> Callable[[requests.Session], None]:
        def sample(http: requests.Session) -> None:
            sent = time.monotonic()
            if not sidecar.running():
                self.timeline.record_status(sidecar.name, StatusSample(sent, sent, EXITED))
                return
            try:
                reply = http.get(f"http://127.0.0.1:{sidecar.status_port}/status",
                                 timeout=STATUS_TIMEOUT)
                document = reply.json()
            except (requests.RequestException, ValueError):
                # A process that is starting up, paused, or too busy to answer.
                self.timeline.record_status(
                    sidecar.name, StatusSample(sent, time.monotonic(), UNREACHABLE)
                )
                return
            self.timeline.record_status(
                sidecar.name, self._status_sample(document, sent, time.monotonic())
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
