"""A task's process, started and stopped as Nomad's executor does.

nomad: drivers/shared/executor/executor.go (UniversalExecutor.Launch: own session so the
task is its own process group; Shutdown: the kill signal, SIGKILL after the grace period,
then SIGKILL to the whole group) and client/logmon (stdout and stderr to
`alloc/logs/<task>.stdout.0` and `.stderr.0`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REAP_TIMEOUT = 15.0  # executor.Shutdown waits this long for the exit after SIGKILL


class TaskProcess:
    """One run of one task. Thread-safe enough for one waiter plus any signaller."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout_path: Path,
                 stderr_path: Path, on_exit: Callable[[], None] | None = None) -> None:
        self._popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.started = time.monotonic()
        self.ended: float | None = None
        self.signals_sent: list[tuple[float, str]] = []
        self.exited = threading.Event()
        self._on_exit = on_exit
        # One waiter per process (the executor's wait): it ends when the process does.
        self._waiter = threading.Thread(target=self._wait_for_exit, daemon=True,
                                        name=f"wait-{popen.pid}")
        self._waiter.start()

    @classmethod
    def spawn(cls, command: Sequence[str], env: Mapping[str, str], cwd: Path,
              stdout_path: Path, stderr_path: Path,
              on_exit: Callable[[], None] | None = None) -> TaskProcess:
        stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with open(stdout_path, "ab") as stdout, open(stderr_path, "ab") as stderr:
            popen = subprocess.Popen(
                list(command), env=dict(env), cwd=cwd, stdout=stdout, stderr=stderr,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return cls(popen, stdout_path, stderr_path, on_exit)

    def _wait_for_exit(self) -> None:
        self._popen.wait()
        self.ended = time.monotonic()
        self.exited.set()
        if self._on_exit is not None:
            self._on_exit()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exit_code(self) -> int | None:
        """The exit status, or -N when signal N ended it; None while it runs."""
        return self._popen.returncode if self.exited.is_set() else None

    def running(self) -> bool:
        return not self.exited.is_set()

    def send_signal(self, sig: signal.Signals) -> bool:
        """Send `sig`; False when the process is already gone."""
        if not self.running():
            return False
        self.signals_sent.append((time.monotonic(), sig.name))
        try:
            self._popen.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None when it still runs after `timeout` seconds."""
        if not self.exited.wait(timeout):
            return None
        return self._popen.returncode

    def shutdown(self, kill_signal: signal.Signals, grace: float) -> int | None:
        """nomad: executor.go (Shutdown): the kill signal, SIGKILL after `grace`, then
        SIGKILL to the process group (children included), then wait for the exit."""
        if grace > 0:
            self.send_signal(kill_signal)
            if self.wait(grace) is None:
                self.send_signal(signal.SIGKILL)
        else:
            self.send_signal(signal.SIGKILL)
        self.kill_group()
        return self.wait(REAP_TIMEOUT)

    def kill_group(self) -> None:
        # nomad: executor.go (killProcessTree): whatever the task left behind goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)

    def logs(self, stream: str = "both") -> str:
        paths = {"stdout": [self.stdout_path], "stderr": [self.stderr_path],
                 "both": [self.stdout_path, self.stderr_path]}[stream]
        return "".join(path.read_text(errors="replace") for path in paths if path.exists())
