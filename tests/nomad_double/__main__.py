"""Run a job of N allocations, each with the leader sidecar, against a running stand-in.

    python -m tests.consul_double --nodes n1,n2,n3 --port 8500 --control-port 8499 &
    python -m tests.nomad_double --consul http://127.0.0.1:8500,http://127.0.0.1:8501,\\
        http://127.0.0.1:8502 --count 3 --sync-period 30s \\
        --sidecar-env CONSUL_LEADER_SERVICE_NAME=db --sidecar-env CONSUL_LEADER_TTL=15s

One Nomad client per `--consul` agent (node names come from its /v1/agent/self);
allocations are placed round robin. When every allocation runs and its services are
synced, it prints one JSON line (nodes, allocations with their service IDs, task pids
and log files, the work directory) and flushes. SIGINT or SIGTERM stops every allocation
in Nomad's order (main task, then the sidecar; services deregistered; tokens revoked)
and exits 0. A bad argument exits 2 with one line.

ACLs: `--control <stand-in control URL> --agent-token <management token>
[--task-rules-file F]` gives each allocation its own workload identity tokens (the
sidecar's in secrets/consul_token, CONSUL_HTTP_TOKEN_FILE pointing at it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from tests.consul_double.durations import SECOND, GoSyntaxError, parse_duration

from .alloc_runner import Allocation
from .client import AclSettings, NodeConfig
from .cluster import NomadDouble
from .consul_api import AgentClient, ConsulError
from .jobs import SIDECAR_COMMAND, leader_job
from .service_client import SyncSettings

READY_TIMEOUT = 30.0
DEFAULT_TASK_RULES = """
key_prefix "consul-leader/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
"""


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text) / SECOND
    except GoSyntaxError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _addresses(text: str) -> list[str]:
    return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]


def _pair(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.nomad_double",
        description="Run a leader-sidecar job on modelled Nomad clients.")
    parser.add_argument("--consul", type=_addresses, action="append", required=True,
                        help="agent URL(s), one Nomad client each (repeat or comma-separate)")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--job", default="db")
    parser.add_argument("--service", default="db")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--sync-period", type=_seconds, default=30.0, help="default 30s")
    parser.add_argument("--probation", type=_seconds, default=60.0, help="default 1m")
    parser.add_argument("--check-interval", type=_seconds, default=10.0)
    parser.add_argument("--no-enable-tag-override", action="store_true")
    parser.add_argument("--sidecar-command", type=shlex.split,
                        help=f"default: {shlex.join(SIDECAR_COMMAND)}")
    parser.add_argument("--sidecar-env", type=_pair, action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--control", help="the stand-in's control URL (turns ACLs on)")
    parser.add_argument("--agent-token", help="the Nomad agent's Consul token (with ACLs)")
    parser.add_argument("--task-rules-file", type=Path,
                        help="rules of each sidecar's token (default: the sidecar's policy)")
    return parser


def _acl(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> AclSettings | None:
    if not arguments.control:
        if arguments.agent_token or arguments.task_rules_file:
            parser.error("--agent-token and --task-rules-file need --control")
        return None
    if not arguments.agent_token:
        parser.error("--control needs --agent-token")
    rules = (arguments.task_rules_file.read_text() if arguments.task_rules_file
             else DEFAULT_TASK_RULES)
    return AclSettings(arguments.control, arguments.agent_token, rules)


def _nodes(addresses: list[str], token: str | None) -> list[NodeConfig]:
    nodes = []
    for address in addresses:
        config = AgentClient(address, token).self_info().get("Config", {})
        nodes.append(NodeConfig(str(config.get("NodeName") or address), address))
    return nodes


def _summary(nomad: NomadDouble, allocations: list[Allocation]) -> dict[str, Any]:
    return {
        "nodes": {client.name: client.node.consul for client in nomad.clients},
        "workdir": str(nomad.workdir),
        "allocations": [
            {
                "id": allocation.id, "node": allocation.node, "index": allocation.index,
                "services": allocation.service_ids(),
                "tasks": {
                    name: {"pid": runner.process.pid if runner.process else None,
                           "stdout": str(runner.dirs.stdout),
                           "stderr": str(runner.dirs.stderr)}
                    for name, runner in allocation.tasks.items()
                },
            }
            for allocation in allocations
        ],
    }


def _wait_ready(allocations: list[Allocation]) -> None:
    for allocation in allocations:
        allocation.wait_running(READY_TIMEOUT)
    for client in {allocation.client for allocation in allocations}:
        if not client.service_client.wait_idle(READY_TIMEOUT):
            raise TimeoutError(f"{client.name}: services not synced in {READY_TIMEOUT:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    acl = _acl(arguments, parser)
    addresses = [address for group in arguments.consul for address in group]
    try:
        nodes = _nodes(addresses, arguments.agent_token)
    except ConsulError as error:
        print(f"nomad double: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="nomad-double-"))
    settings = SyncSettings(period=arguments.sync_period, probation=arguments.probation)
    job = leader_job(
        job_id=arguments.job, service=arguments.service, count=arguments.count,
        sidecar_env=dict(arguments.sidecar_env), sidecar_command=arguments.sidecar_command,
        enable_tag_override=not arguments.no_enable_tag_override,
        check_interval=arguments.check_interval, token_file=acl is not None,
    )
    with NomadDouble(nodes, workdir, sync=settings, acl=acl) as nomad:
        allocations = nomad.run_job(job)
        _wait_ready(allocations)
        print(json.dumps(_summary(nomad, allocations)), flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
