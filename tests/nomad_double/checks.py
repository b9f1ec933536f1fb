"""Nomad's script checks: run in the task every interval, reported to a Consul TTL check.

nomad: client/allocrunner/taskrunner/script_check_hook.go (newScriptCheckCallback,
scriptCheck.updateTTL) and tasklet.go (tasklet.run: first run at once, then every
interval). Why a TTL check: Consul cannot exec into a Nomad task, so createCheckReg
(service_client.go) registers a script check as a TTL of interval + 31 s and Nomad
heartbeats it; Consul marks it critical on its own when the heartbeats stop.

The model does not exec a script: `probe` answers what the script would have (the
application health the test set), and an exec into a task that is not running fails,
which Nomad reports as critical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .consul_api import ConsulError

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
# nomad: script_check_hook.go (scriptCheck.updateTTL): retry after 1 s, give up when the
# next backoff (4 s) would pass 3 s, i.e. one retry.
UPDATE_TTL_BACKOFF_BASE = 1.0
UPDATE_TTL_BACKOFF_LIMIT = 3.0

Probe = Callable[[int], tuple[int, str]]  # run number -> (exit code, output)
UpdateTtl = Callable[[str, str, str], None]  # check ID, status, output


def status_of(exit_code: int) -> str:
    # nomad: script_check_hook.go (newScriptCheckCallback): 0 passing, 1 warning, else critical
    return {0: PASSING, 1: WARNING}.get(exit_code, CRITICAL)


class ScriptCheckRunner:
    """One script check of one task run: a thread heartbeating its TTL check."""

    def __init__(self, check_id: str, interval: float, probe: Probe, update_ttl: UpdateTtl,
                 name: str, backoff_base: float = UPDATE_TTL_BACKOFF_BASE) -> None:
        self.check_id = check_id
        self.interval = interval
        self.backoff_base = backoff_base
        self._probe = probe
        self._update_ttl = update_ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.runs = 0
        self.last_status: str | None = None

    def start(self) -> ScriptCheckRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            # tasklet.run resets its timer before it executes, so runs are `interval` apart.
            next_run = time.monotonic() + self.interval
            code, output = self._probe(self.runs)
            self.runs += 1
            self.last_status = status_of(code)
            self._heartbeat(self.last_status, output)
            self._stop.wait(max(0.0, next_run - time.monotonic()))

    def _heartbeat(self, status: str, output: str) -> None:
        attempts = 0
        while not self._stop.is_set():
            try:
                self._update_ttl(self.check_id, status, output)
                return
            except ConsulError:
                backoff = (1 << (2 * attempts)) * self.backoff_base
                limit = UPDATE_TTL_BACKOFF_LIMIT / UPDATE_TTL_BACKOFF_BASE * self.backoff_base
                if backoff > limit:
                    return
                attempts += 1
                self._stop.wait(backoff)
