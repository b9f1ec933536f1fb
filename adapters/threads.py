"""The one way adapters run in the background: a `Worker` thread calling a `step` function.

Each adapter is a plain object whose `step()` does what is due now (at most a few requests),
and returns the monotonic instant at which it wants to run again (`None`: only when poked).
The thread sleeps until then, or until `poke()` (an instruction from the controller arrived).
So the adapters themselves never sleep and never own a thread: unit tests call `step()`
directly against a fake clock and a fake Consul.

Every adapter already turns Consul's faults into retries. The worker is the net under that:
if a step still raises something nobody foresaw, the error is logged on one line and the step
runs again after `restart_pause`, instead of the sidecar going on with a dead thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("consul_leader.threads")

Step = Callable[[], float | None]


class Worker:
    """Runs `step` in a daemon thread until `stop()`."""

    def __init__(self, name: str, step: Step, *, restart_pause: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._step = step
        self._restart_pause = restart_pause
        self._clock = clock
        self._cond = threading.Condition()
        self._poked = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Run the step again as soon as the current one (if any) is over."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._poked = False
            due = self._run_step()
            with self._cond:
                self._wait_locked(due)

    def _run_step(self) -> float | None:
        try:
            return self._step()
        except Exception as exc:  # the net: one line, then carry on
            log.error("worker failed; restarting it", extra={
                "worker": self._name, "error": f"{type(exc).__name__}: {exc}"})
            return self._clock() + self._restart_pause

    def _wait_locked(self, due: float | None) -> None:
        while not (self._poked or self._stopped):
            if due is None:
                self._cond.wait()
                continue
            left = due - self._clock()
            if left <= 0:
                return
            self._cond.wait(left)
