"""Local side effects of the role: the leader file and the promote / demote commands."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("consul_leader.hooks")


class LeaderFile:
    """A file that exists only while we lead, written atomically (the seed's contract)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def write(self, content: Mapping[str, object]) -> None:
        if not self.path:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".consul-leader-", dir=directory)
            with os.fdopen(fd, "w") as handle:
                json.dump(content, handle, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, self.path)  # rename(2) is atomic: readers never see half a file
        except OSError as exc:
            log.error("cannot write the leader file", extra={"path": self.path, "error": str(exc)})

    def remove_leftover(self) -> bool:
        """Remove a file an earlier run left (it did not stop cleanly); True if there was one."""
        left = bool(self.path) and os.path.lexists(str(self.path))
        self.remove()
        return left

    def remove(self) -> None:
        if not self.path:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove the leader file", extra={"path": self.path, "error": str(exc)})


@dataclass(frozen=True)
class HookCall:
    name: str  # promote | demote
    command: str
    env: Mapping[str, str]


class HookRunner:
    """Runs promote/demote commands one at a time, in order, each with a timeout.

    They run in their own thread so that a slow command never delays the state machine.
    """

    def __init__(self, timeout: float,
                 on_result: Callable[[str, str], None] = lambda hook, result: None) -> None:
        self._timeout = timeout
        self._on_result = on_result
        self._queue: queue.Queue[HookCall | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hooks", daemon=True)
        self._thread.start()

    def submit(self, name: str, command: str | None, env: Mapping[str, str]) -> None:
        if command:
            self._queue.put(HookCall(name, command, env))

    def drain(self, timeout: float) -> None:
        """Wait (bounded) for queued commands to finish, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            result = self._execute(call)
            self._on_result(call.name, result)

    def _execute(self, call: HookCall) -> str:
        started = time.monotonic()
        env = {**os.environ, **call.env}
        try:
            process = subprocess.Popen(["/bin/sh", "-c", call.command], env=env,
                                       start_new_session=True)
        except OSError as exc:
            log.error("hook could not start", extra={"hook": call.name, "error": str(exc)})
            return "failed"
        try:
            code = process.wait(self._timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.error("hook timed out", extra={"hook": call.name, "timeout": self._timeout})
            return "timeout"
        seconds = round(time.monotonic() - started, 3)
        if code != 0:
            log.error("hook failed", extra={"hook": call.name, "status": code, "seconds": seconds})
            return "failed"
        log.info("hook ran", extra={"hook": call.name, "seconds": seconds})
        return "ok"
