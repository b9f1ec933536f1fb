"""One background thread that fires every timer of the double, in deadline order.

Session TTLs (consul-semantics.md §1.4), check TTLs (§4.6) and the end of a
failover window all live here, on the monotonic clock: one thread and a heap,
not a thread per timer. A callback runs on the timer thread without the wheel's
lock held, so it may take the cluster lock and schedule or cancel other timers.
Cancelling is O(1); cancelled entries are dropped lazily and the heap is rebuilt
when they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

_LOG = logging.getLogger(__name__)
_COMPACT_THRESHOLD = 1024


class TimerHandle:
    """A scheduled callback; cancel it through the wheel that made it."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[TimerHandle], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False


class TimerWheel:
    """Runs callbacks at monotonic deadlines on a single daemon thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._cancelled_in_heap = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="consul-double-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (pending timers never fire) and join it."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join()

    def schedule(self, delay: float, callback: Callable[[TimerHandle], None]) -> TimerHandle:
        """Run `callback(handle)` after `delay` seconds; the handle lets it check it is current."""
        handle = TimerHandle(self._clock() + delay, callback)
        with self._condition:
            heapq.heappush(self._heap, (handle.deadline, next(self._sequence), handle))
            if self._heap[0][2] is handle:
                self._condition.notify()
        return handle

    def cancel(self, handle: TimerHandle | None) -> None:
        if handle is None:
            return
        with self._condition:
            if handle.cancelled:
                return
            handle.cancelled = True
            self._cancelled_in_heap += 1
            self._compact_if_mostly_cancelled()

    def _compact_if_mostly_cancelled(self) -> None:
        # Renewing sessions cancels and re-adds a timer per renew; without this
        # the heap would grow by one entry per renew until each deadline passes.
        live = len(self._heap) - self._cancelled_in_heap
        if self._cancelled_in_heap > _COMPACT_THRESHOLD and self._cancelled_in_heap > live:
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled_in_heap = 0

    def _run(self) -> None:
        while True:
            handle = self._next_due()
            if handle is None:
                return
            try:
                handle.callback(handle)
            except Exception:
                _LOG.exception("consul double timer callback failed")

    def _next_due(self) -> TimerHandle | None:
        """Block until a live timer is due (return it) or the wheel stops (None)."""
        with self._condition:
            while not self._stopping:
                if not self._heap:
                    self._condition.wait()
                    continue
                deadline, _, handle = self._heap[0]
                if handle.cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled_in_heap -= 1
                    continue
                remaining = deadline - self._clock()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                handle.cancelled = True  # fired: a later cancel() is a no-op
                return handle
            return None
