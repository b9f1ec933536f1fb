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


# The one timeout that does not come from our own settings: Nomad sends SIGKILL 5 s after
# SIGTERM by default (kill_timeout); a clean shutdown must fit well inside it.
NOMAD_KILL_TIMEOUT = 5.0
_SHUTDOWN_SHARE = 0.8
# A request must never outlive a renew interval, nor half a TTL, and needs no more than this
# much: beyond it, waiting longer for one answer only delays the retry.
_REQUEST_TIMEOUT_CAP = 5.0
# Consul adds up to wait/16 of jitter to a blocking query's wait (consul-semantics §3).
_WATCH_JITTER = 1 / 16
_HEARTBEATS_BEFORE_WEDGED = 10


@dataclass(frozen=True)
class Timings:
    """Every wait and timeout the adapters use, derived from the session TTL, the renew
    interval (SLEEP) and the blocking-query wait, so that changing the TTL scales all of them
    (tests run with TTL 3 s what production runs with 15 s). Seconds throughout."""

    ttl: float
    renew_interval: float
    watch_wait: float
    lock_delay: float = 0.0

    @property
    def request_timeout(self) -> float:
        """One ordinary request: long enough for a slow Consul, short enough to retry within
        the lease (several retries fit in TTL - SLEEP)."""
        return min(_REQUEST_TIMEOUT_CAP, max(self.renew_interval, self.ttl / 2))

    def request_timeout_within(self, remaining: float | None) -> float:
        """A request made for the lease: never past its deadline (an answer after it is
        worthless), never so short that it cannot be answered."""
        if remaining is None:
            return self.request_timeout
        return max(self.min_request_timeout, min(self.request_timeout, remaining))

    @property
    def min_request_timeout(self) -> float:
        return self.ttl / 15

    @property
    def watch_timeout(self) -> float:
        """A blocking query waits `watch_wait` plus Consul's jitter; then the answer travels."""
        return self.watch_wait * (1 + _WATCH_JITTER) + self.request_timeout

    @property
    def watch_wait_text(self) -> str:
        """`?wait=` as Consul reads it."""
        return f"{int(self.watch_wait)}s"

    @property
    def min_watch_interval(self) -> float:
        """Rate limit of a watch loop whose index does not move (or an answer without one)."""
        return self.ttl / 60

    @property
    def retry_cap(self) -> float:
        """The longest pause between retries of a failed request: well inside a renew
        interval, so a fault that ends is noticed before the next renew."""
        return min(self.renew_interval, self.ttl / 3)

    def backoff(self, attempt: int) -> float:
        """Pause before retry `attempt` (0 for the first) of a failed request."""
        _check_attempt(attempt)
        base = self.retry_cap / 8
        return min(self.retry_cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))

    @property
    def role_check_ttl(self) -> float:
        """A little shorter than the lease check's TTL. The two are passed one round trip
        apart, so a small margin orders their expiry; a large one would eat into the outage a
        leader must survive (TTL - SLEEP), since the role check must not lapse during it."""
        return self.ttl - min(0.25, (self.ttl - self.renew_interval) / 4)

    @property
    def other_primary_wait(self) -> float:
        """How long a new leader waits for another passing primary to go before publishing
        anyway: that instance's role check expires within its TTL of its last pass (no later
        than when we first saw it); the margin covers the agent's sync to the catalog."""
        return self.role_check_ttl + self.ttl / 10

    @property
    def stale_primary_grace(self) -> float:
        """How long another passing primary is left alone before its session is looked up: a
        sidecar whose session was just ended relabels itself within a round trip or two, and
        the margin is the agent's sync to the catalog, as in `other_primary_wait`."""
        return self.ttl / 10

    @property
    def other_primary_recheck(self) -> float:
        """How often a waiting leader asks again whether the other primary is gone."""
        return self.ttl / 30

    @property
    def target_grace(self) -> float:
        """How long a target service may be deregistered before we stop competing for it:
        Nomad deregisters and registers again within a sync."""
        return self.renew_interval

    @property
    def discovery_interval(self) -> float:
        """How often the allocation's services are listed while none is known."""
        return self.ttl / 15

    @property
    def rediscovery_interval(self) -> float:
        """...and once they are (a service added to a running allocation is rare)."""
        return self.renew_interval

    @property
    def heartbeat_period(self) -> float:
        """The control loop's heartbeat (for /livez), at most a second."""
        return min(1.0, self.renew_interval / 2)

    @property
    def wedged_after(self) -> float:
        return self.heartbeat_period * _HEARTBEATS_BEFORE_WEDGED

    @property
    def shutdown_budget(self) -> float:
        """A clean shutdown fits inside Nomad's kill timeout."""
        return NOMAD_KILL_TIMEOUT * _SHUTDOWN_SHARE

    # -- priorities (issue 12) --------------------------------------------------------------

    def priority_delay(self, higher: int) -> float:
        """How long a candidate waits before `?acquire` when `higher` healthy peers of higher
        priority are listed: a tenth of the TTL per peer (time for each to see the free key and
        take it, on a busy host), never more than half the TTL in all."""
        if higher < 0:
            raise ValueError(f"higher must be >= 0, got {higher}")
        return min(self.ttl / 2, higher * self.ttl / 10)

    @property
    def session_dead_after(self) -> float:
        """Consul invalidates a session at most 2 x TTL after its last renew (§1.4)."""
        return 2 * self.ttl
