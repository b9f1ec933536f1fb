"""Run the Consul double as a command.

    python -m tests.consul_double --nodes n1,n2,n3 --port 8500 --control-port 8499 \\
        [--session-ttl-min 1s] [--rpc-hold-timeout 7s] \\
        [--acl-default-policy deny --acl-tokens tokens.json] \\
        [--tls-cert F --tls-key F [--tls-ca F] [--tls-verify-incoming]]

Node i (0-based) listens on port+i. When every listener is up the command
prints exactly one JSON line, `{"nodes": {"n1": "http://127.0.0.1:8500", ...},
"control": "http://127.0.0.1:8499"}`, and flushes stdout. SIGINT or SIGTERM
stops it cleanly with exit status 0; a bad argument exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from .acl import AclSystem
from .cluster import ConsulDouble, TlsConfig
from .durations import SECOND, GoSyntaxError, parse_duration


def _duration_seconds(text: str) -> float:
    try:
        return parse_duration(text) / SECOND
    except GoSyntaxError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _node_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("need at least one node name")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.consul_double", description="Serve a Consul stand-in on loopback."
    )
    parser.add_argument("--nodes", type=_node_list, default=("n1",),
                        help="comma-separated node names (default n1)")
    parser.add_argument("--servers", type=_node_list, default=(),
                        help="comma-separated nodes whose agents are servers (default none)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="port of the first node")
    parser.add_argument("--control-port", type=int, default=8499)
    parser.add_argument("--session-ttl-min", type=_duration_seconds, default=10.0,
                        help="Go duration, default 10s")
    parser.add_argument("--rpc-hold-timeout", type=_duration_seconds, default=7.0,
                        help="Go duration, default 7s")
    parser.add_argument("--acl-default-policy", choices=("allow", "deny"))
    parser.add_argument("--acl-tokens", help="JSON file of tokens (enables ACLs)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-verify-incoming", action="store_true")
    return parser


def _acl(arguments: argparse.Namespace) -> AclSystem | None:
    if arguments.acl_tokens:
        return AclSystem.from_file(arguments.acl_tokens, arguments.acl_default_policy or "deny")
    if arguments.acl_default_policy:
        return AclSystem(default_policy=arguments.acl_default_policy)
    return None


def _tls(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> TlsConfig | None:
    if not (arguments.tls_cert or arguments.tls_key):
        if arguments.tls_ca or arguments.tls_verify_incoming:
            parser.error("--tls-ca and --tls-verify-incoming need --tls-cert and --tls-key")
        return None
    if not (arguments.tls_cert and arguments.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return TlsConfig(arguments.tls_cert, arguments.tls_key, arguments.tls_ca,
                     arguments.tls_verify_incoming)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        double = ConsulDouble(
            nodes=arguments.nodes,
            servers=arguments.servers,
            session_ttl_min=arguments.session_ttl_min,
            rpc_hold_timeout=arguments.rpc_hold_timeout,
            acl=_acl(arguments),
            tls=_tls(arguments, parser),
            host=arguments.host,
            base_port=arguments.port,
            control_port=arguments.control_port,
        )
    except (OSError, ValueError) as error:
        print(f"consul double: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        double.start()
    except OSError as error:
        print(f"consul double: {error}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(double.addresses()), flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        double.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
