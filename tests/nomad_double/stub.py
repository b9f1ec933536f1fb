"""A tiny task for the model (the default main task, and the sidecar stand-in of tests).

It writes its environment to `$NOMAD_TASK_DIR/stub-env.json` at start and prints one line
per signal (`signal SIGTERM <monotonic>`) to stdout. CLOCK_MONOTONIC is system-wide on
Linux, so tests compare these times with their own.

    STUB_ON_SIGTERM=exit|ignore   exit 0 on SIGTERM/SIGINT (default) or carry on
    STUB_EXIT_AFTER=<seconds>     exit by itself after that long, with STUB_EXIT_CODE (1)

Standard library only, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RECORDED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGCONT)


def _say(text: str) -> None:
    sys.stdout.write(f"{text} {time.monotonic():.6f}\n")
    sys.stdout.flush()


def _on_signal(number: int, frame: FrameType | None) -> None:
    name = signal.Signals(number).name
    _say(f"signal {name}")
    if number in [int(s) for s in STOP_SIGNALS] and os.environ.get(
            "STUB_ON_SIGTERM", "exit") == "exit":
        _say("exiting 0")
        raise SystemExit(0)


def _record_environment() -> None:
    directory = os.environ.get("NOMAD_TASK_DIR") or "."
    target = os.path.join(directory, "stub-env.json")
    temporary = target + ".tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump({"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ)}, out)
    os.replace(temporary, target)


def main() -> int:
    for sig in RECORDED_SIGNALS:
        signal.signal(sig, _on_signal)
    _record_environment()
    _say("started")
    exit_after = os.environ.get("STUB_EXIT_AFTER")
    deadline = time.monotonic() + float(exit_after) if exit_after else None
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    code = int(os.environ.get("STUB_EXIT_CODE", "1"))
    _say(f"exiting {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
