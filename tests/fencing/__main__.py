"""Serve the fenced store as a command.

    python -m tests.fencing [--host 127.0.0.1] [--port 0] [--record out.json]

When it listens it prints exactly one JSON line, `{"store": "http://127.0.0.1:PORT"}`, and
flushes stdout. SIGINT or SIGTERM stops it with exit status 0, after writing every attempt
to `--record` when given. A port that cannot be bound exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from tests.fencing.store import StoreServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fencing",
                                     description="Serve a fenced store on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--record", type=Path, help="write every attempt here (JSON) on exit")
    return parser


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    # Blocked before the server's thread starts (threads inherit the mask), then waited for.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        server = StoreServer(arguments.host, arguments.port)
    except OSError as error:
        print(f"fenced store: {error}", file=sys.stderr)
        return 2
    with server:
        print(json.dumps({"store": server.url}), flush=True)
        signal.sigwait(STOP_SIGNALS)
    if arguments.record is not None:
        attempts = [asdict(a) for a in server.store.record()]
        arguments.record.write_text(json.dumps(attempts, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
