"""`consul-leader switchover`: ask the leader's sidecar to hand leadership over.

    consul-leader switchover [--to INSTANCE] [--hold-off 5s] [--addr HOST:PORT]
                             [--token-file FILE]

Sends `POST /switchover` to the sidecar's HTTP endpoint (default: CONSUL_LEADER_LISTEN, on
127.0.0.1 when it names every interface). The bearer token comes from `--token-file`, else
CONSUL_LEADER_HTTP_TOKEN_FILE; an unusable file is refused before any request. Prints the
sidecar's JSON answer on success; otherwise one line on stderr.

Exit status: 0 handed over (or under way), 1 the sidecar refused (its status and reason),
2 bad arguments or configuration, 3 the sidecar could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import requests

from consul_leader.adapters.config import (
    DEFAULT_LISTEN,
    http_token_file_problem,
    read_token_file,
)

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
PROG = "consul-leader switchover"
TOKEN_VARIABLE = "CONSUL_LEADER_HTTP_TOKEN_FILE"
# The sidecar answers once the key is released, within two request timeouts (at most 10 s).
REQUEST_SECONDS = 15.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{PROG}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def parser() -> argparse.ArgumentParser:
    parse = _Parser(prog=PROG, description="Ask the leader's sidecar to hand leadership over.")
    parse.add_argument("--to", help="instance (allocation ID) that should lead next")
    parse.add_argument("--hold-off", help="how long the old leader stays out (e.g. 5s)")
    parse.add_argument("--addr", help="the sidecar's HTTP address, host:port or a URL "
                       "(default: from CONSUL_LEADER_LISTEN)")
    parse.add_argument("--token-file", help=f"bearer token file (default: {TOKEN_VARIABLE})")
    return parse


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    try:
        args = parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    token, problem = _token(args.token_file, environ)
    if problem:
        print(f"{PROG}: configuration error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    url = f"{_base_url(args.addr, environ)}/switchover"
    params = {name: value for name, value in (("to", args.to), ("hold_off", args.hold_off))
              if value}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = requests.post(url, params=params, headers=headers, timeout=REQUEST_SECONDS)
    except requests.RequestException as exc:
        print(f"{PROG}: cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if reply.status_code in (200, 202):
        print(reply.text.strip())
        return EXIT_OK
    reason = reply.text.strip().splitlines()[0] if reply.text.strip() else reply.reason
    print(f"{PROG}: {reply.status_code} {reason}", file=sys.stderr)
    return EXIT_REFUSED


def _token(option: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(token, problem): the token from the option's file, else the variable's."""
    name, path = ("--token-file", option) if option else (TOKEN_VARIABLE,
                                                           environ.get(TOKEN_VARIABLE))
    if not path:
        return None, None
    problem = http_token_file_problem(path)
    if problem:
        return None, f"{name}={path}: {problem}"
    return read_token_file(path), None


def _base_url(addr: str | None, environ: Mapping[str, str]) -> str:
    text = addr or environ.get("CONSUL_LEADER_LISTEN") or DEFAULT_LISTEN
    if "://" in text:
        return text.rstrip("/")
    host, _, port = text.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"
