"""Worker threads that outlive their own bugs.

Every adapter loop already turns Consul's faults into retries. This is the net under that:
if a loop still dies of something nobody foresaw, the error is logged on one line and the
loop starts again a second later, instead of the sidecar going on with a dead thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("consul_leader.threads")

RESTART_PAUSE = 1.0


def start_worker(name: str, loop: Callable[[], None], stopped: Callable[[], bool],
                 pause: Callable[[float], object] | None = None) -> threading.Thread:
    """Run `loop` in a daemon thread; restart it if it raises, until `stopped()`."""
    wait = pause or threading.Event().wait

    def run() -> None:
        while not stopped():
            try:
                loop()
                return
            except Exception as exc:  # the net: one line, then carry on
                log.error("worker failed; restarting it", extra={
                    "worker": name, "error": f"{type(exc).__name__}: {exc}"})
                wait(RESTART_PAUSE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
