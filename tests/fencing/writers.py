"""Running writers beside sidecars, and judging a run's writes.

* Under Nomad the writer is the allocation's main task (`writer_command` as the job's main
  command): it reads the sidecar's leader file from the shared allocation directory, and
  Nomad starts, restarts and stops it with the allocation, as it would the application.
* In the Consul-only setting a `WriterProcess` runs beside each sidecar process with the
  sidecar's NOMAD_ALLOC_DIR and NOMAD_ALLOC_ID, so it reads the same leader file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fencing.judge import ACQUIRED, RELEASED, FencingFigures, judge, lock_terms
from tests.fencing.store import FencedStore

WRITER_SCRIPT = Path(__file__).with_name("writer.py")
STOP_TIMEOUT = 5.0


def writer_command(store_url: str) -> list[str]:
    """The writer by path (standard library only: no PYTHONPATH needed in a task)."""
    return [sys.executable, str(WRITER_SCRIPT), "--store", store_url]


class WriterProcess:
    """One writer process; `crashed` when it ended before we stopped it."""

    def __init__(self, store_url: str, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(writer_command(store_url), env=dict(env),
                                            stdout=log, stderr=subprocess.STDOUT)
        self.crashed: int | None = None

    def stop(self) -> None:
        """SIGCONT (a scenario may have paused it), SIGTERM, SIGKILL after STOP_TIMEOUT."""
        if self.process.poll() is not None:
            self.crashed = self.process.returncode
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def figures_of(store: FencedStore, consul: Any, key: str) -> FencingFigures:
    """The run's figures: the store's record judged against the stand-in's journal of `key`
    (`consul`: a tests.consul_double.ConsulDouble, open or closed)."""
    oldest = consul.events()[:1]
    complete = not oldest or oldest[0]["seq"] == 1  # nothing dropped yet
    return judge(store.record(), lock_terms(lock_journal(consul), key), complete)


def lock_journal(consul: Any) -> list[dict[str, Any]]:
    """The stand-in's acquisitions and releases of any key, in journal order."""
    events = [*consul.events(kind=ACQUIRED), *consul.events(kind=RELEASED)]
    return sorted(events, key=lambda event: event["seq"])
