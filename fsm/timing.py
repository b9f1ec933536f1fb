"""Timing rules: the local lease and how long to wait between attempts. Pure.

Time is passed in as floats of a monotonic clock (the adapters use `time.monotonic()`), so these
rules are tested with plain numbers and never sleep.

The lease is our own, conservative view of the session: Consul only promises not to invalidate
a session *before* its TTL after the last renew (in practice it waits up to 2x TTL). We measure
from when the renew was *sent*, because Consul may have restarted its timer any time after that.
"""

from dataclasses import dataclass

# Beyond this exponent every backoff is at its cap; bounding it keeps 2**attempt finite.
_MAX_EXPONENT = 32
_MIN_RETRY_DELAY = 0.05
_MIN_LOCK_DELAY_WAIT = 0.1
_LOCK_DELAY_BASE = 0.1
_LOCK_DELAY_CAP = 1.0


@dataclass
class Lease:
    """Local lease: valid until (send time of the last confirmed renew) + TTL. Consul only
    promises not to invalidate before TTL, so this is the last instant we may still claim
    anything."""

    ttl: float
    deadline: float | None = None

    def confirm(self, sent_at: float, now: float) -> bool:
        """A renew (or create) sent at `sent_at` was answered OK at `now`.

        Returns False, and leaves the lease as it is, when the answer came after the current
        deadline (e.g. the process was paused): by then the session may be gone and another
        leader elected, so the caller must treat the lease as expired. A fresh lease (no
        deadline yet) always accepts. The deadline never moves backwards.
        """
        if self.deadline is not None and now >= self.deadline:
            return False
        extended = sent_at + self.ttl
        self.deadline = extended if self.deadline is None else max(self.deadline, extended)
        return True

    def expired(self, now: float) -> bool:
        """True when there is no deadline or it has been reached."""
        return self.deadline is None or now >= self.deadline

    def remaining(self, now: float) -> float:
        """Seconds left before the deadline; 0 when expired or never confirmed."""
        if self.deadline is None:
            return 0.0
        return max(0.0, self.deadline - now)

    def clear(self) -> None:
        """Forget the deadline (the session is gone)."""
        self.deadline = None


def retry_delay(attempt: int, remaining: float, base: float = 0.25, cap: float = 2.0) -> float:
    """Delay before retry number `attempt` (0 for the first) of a failed renew.

    Exponential backoff `base * 2**attempt`, capped at `cap`, and at most a third of the time
    `remaining` on the lease so several retries still fit before the deadline; never below
    0.05 s so a lease about to expire does not turn into a hot loop.
    """
    _check_attempt(attempt)
    backoff = base * 2.0 ** min(attempt, _MAX_EXPONENT)
    return max(_MIN_RETRY_DELAY, min(backoff, cap, remaining / 3))


def lock_delay_wait(lock_delay: float, attempt: int) -> float:
    """How long a Candidate waits after `?acquire` was refused by lock-delay.

    Backs off from 0.1 s to at most 1 s, whatever the configured `lock_delay`: the delay in
    force belongs to the session that held the key (maybe created elsewhere, with Consul's
    15 s default) and may have started long before we saw it. Capping the wait at 1 s keeps
    the takeover within 1 s of the delay's end (DESIGN §6: lock-delay + 1 s) at a cost of at
    most one request a second; `lock_delay` only shortens the first waits when it is small.
    """
    _check_attempt(attempt)
    backoff = _LOCK_DELAY_BASE * 2.0 ** min(attempt, _MAX_EXPONENT)
    first = max(_MIN_LOCK_DELAY_WAIT, min(lock_delay, _LOCK_DELAY_CAP))
    return min(_LOCK_DELAY_CAP, max(first if attempt == 0 else _MIN_LOCK_DELAY_WAIT, backoff))


def _check_attempt(attempt: int) -> None:
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
