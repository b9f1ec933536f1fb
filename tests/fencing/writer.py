"""A writer that plays the application: it writes to the fenced store while the sidecar's
leader file says it leads, with the fencing token from that file.

    python tests/fencing/writer.py --store http://127.0.0.1:PORT
        [--leader-file PATH] [--writer-id ID] [--period SECONDS]
    (or python -m tests.fencing.writer ... from the repository)

The leader file defaults as the sidecar's does: CONSUL_LEADER_LEADER_FILE, else
`$NOMAD_ALLOC_DIR/$NOMAD_ALLOC_ID`; the writer ID defaults to NOMAD_ALLOC_ID. So as the main
task of an allocation it needs only `--store`.

Each cycle it reads the leader file (JSON with `fencing_token` and `session`; absent while
not leading), waits one period, then writes with what it read: like an application that
checked its lease and then acted, a writer paused or slowed between the two (SIGSTOP, a GC
pause, a sidecar that has not yet removed the file) writes with a token that may no longer
be the holder's. That is the write fencing must stop. It never stops writing on a 409: only
the leader file going away (the demotion) tells it to stop.

Standard library only, so it starts in a few tens of milliseconds. One line per change on
stdout (`<what> <monotonic time>`); SIGTERM or SIGINT: a summary line, exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import FrameType

DEFAULT_PERIOD = 0.04
REQUEST_TIMEOUT = 1.0


@dataclass(frozen=True)
class Belief:
    """What the leader file said: we lead, with this token, under this session."""

    token: int
    session: str


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    errors: int = 0

    def __str__(self) -> str:
        return f"accepted={self.accepted} rejected={self.rejected} errors={self.errors}"


def say(text: str) -> None:
    sys.stdout.write(f"{text} {time.monotonic():.6f}\n")
    sys.stdout.flush()


def default_leader_file() -> str | None:
    explicit = os.environ.get("CONSUL_LEADER_LEADER_FILE")
    if explicit is not None:
        return explicit or None
    alloc_dir, alloc_id = os.environ.get("NOMAD_ALLOC_DIR"), os.environ.get("NOMAD_ALLOC_ID")
    return os.path.join(alloc_dir, alloc_id) if alloc_dir and alloc_id else None


def read_belief(path: str) -> Belief | None:
    """The leader file's token and session; None while there is no usable file."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None  # absent (not leading), or being replaced: the sidecar renames atomically
    token = document.get("fencing_token") if isinstance(document, dict) else None
    if isinstance(token, bool) or not isinstance(token, int):
        return None
    return Belief(token, str(document.get("session") or ""))


def write(store: str, writer: str, belief: Belief) -> tuple[int, dict[str, object]]:
    """(HTTP status, answer) of one write; status 0 when the store did not answer."""
    body = json.dumps({"writer": writer, "token": belief.token,
                       "session": belief.session}).encode()
    request = urllib.request.Request(f"{store}/write", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as reply:
            return reply.status, _answer(reply.read())
    except urllib.error.HTTPError as exc:  # 409 and the like: an answer all the same
        with exc:
            return exc.code, _answer(exc.read())
    except OSError as exc:
        return 0, {"error": str(exc)}


def _answer(body: bytes) -> dict[str, object]:
    """The store's JSON answer; whatever else came back, kept as text (never a crash)."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    return document if isinstance(document, dict) else {"body": body[:200].decode(errors="replace")}


class Writer:
    def __init__(self, store: str, leader_file: str, writer: str, period: float) -> None:
        self.store, self.leader_file, self.writer, self.period = store, leader_file, writer, period
        self.tally = Tally()
        self._belief: Belief | None = None
        self._last_status: int | None = None

    def run(self) -> None:
        while True:
            belief = read_belief(self.leader_file)
            self._notice(belief)
            time.sleep(self.period)  # a pause here leaves the belief stale: it writes anyway
            if belief is not None:
                self._write(belief)

    def _notice(self, belief: Belief | None) -> None:
        if belief == self._belief:
            return
        if belief is None:
            say(f"demoted: leader file gone (token {self._belief.token if self._belief else '-'})")
        else:
            say(f"leading with token {belief.token} session {belief.session}")
        self._belief, self._last_status = belief, None

    def _write(self, belief: Belief) -> None:
        status, answer = write(self.store, self.writer, belief)
        if status == 200:
            self.tally.accepted += 1
        elif status == 409:
            self.tally.rejected += 1
        else:
            self.tally.errors += 1
        if status != self._last_status:  # one line per change of outcome, not per write
            say(f"write with token {belief.token}: {status or 'no answer'} "
                f"{json.dumps(answer, sort_keys=True)}")
            self._last_status = status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="writer", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the fenced store's URL")
    parser.add_argument("--leader-file", default=default_leader_file(),
                        help="default: CONSUL_LEADER_LEADER_FILE or $NOMAD_ALLOC_DIR/"
                             "$NOMAD_ALLOC_ID")
    parser.add_argument("--writer-id", default=os.environ.get("NOMAD_ALLOC_ID"),
                        help="default: NOMAD_ALLOC_ID")
    parser.add_argument("--period", type=float, default=DEFAULT_PERIOD,
                        help=f"seconds between writes (default {DEFAULT_PERIOD})")
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    say(f"signal {signal.Signals(signum).name}")
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not arguments.leader_file or not arguments.writer_id:
        parser.error("need --leader-file and --writer-id (or NOMAD_ALLOC_DIR and "
                     "NOMAD_ALLOC_ID)")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    writer = Writer(arguments.store.rstrip("/"), arguments.leader_file, arguments.writer_id,
                    arguments.period)
    say(f"started: writer {writer.writer}, leader file {writer.leader_file}")
    try:
        writer.run()
    finally:
        say(f"exiting: {writer.tally}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
