"""Per-node fault injection: added latency and bursts of error answers.

Both apply to every request a node's listener reads, after it is counted in the
statistics and before it is handled. Latency sleeps are cut short when the
listener stops, so a slow node never delays the double's shutdown.
"""

from __future__ import annotations

import threading

INJECTED_ERROR_BODY = "consul double: injected error"


class NodeFaults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency = 0.0
        self._errors_left = 0
        self._error_status = 500
        self._stopping = threading.Event()

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds}")
        with self._lock:
            self._latency = seconds

    def inject_errors(self, count: int, status: int = 500) -> None:
        if count < 0 or not 100 <= status <= 599:
            raise ValueError(f"need count >= 0 and an HTTP status, got {count}, {status}")
        with self._lock:
            self._errors_left = count
            self._error_status = status

    def delay(self) -> None:
        with self._lock:
            latency = self._latency
        if latency > 0:
            self._stopping.wait(latency)

    def take_error(self) -> int | None:
        """The status to answer this request with, while a burst lasts."""
        with self._lock:
            if self._errors_left <= 0:
                return None
            self._errors_left -= 1
            return self._error_status

    def listener_stopping(self) -> None:
        self._stopping.set()

    def listener_started(self) -> None:
        self._stopping.clear()
