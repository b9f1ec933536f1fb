"""The operator's first hour, with real processes: a busy listen address, `:port` on IPv6 and
IPv4, `--help` on an 80-column terminal, and `--help | head -1`.

A listen address that cannot be bound is a configuration error: exit status 2, one line naming
CONSUL_LEADER_LISTEN, no traceback, and not one request to Consul (the stand-in counts them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.harness import REPO, Sidecar, free_port, request_count, wait_for
from tests.integration.support import sidecar_env, stopped_at_exit

pytestmark = pytest.mark.slow

CONSOLE_SCRIPT = Path(sys.executable).parent / "consul-leader"
DEFAULT_PORT = 9500
HELP_WIDTH = 80


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble(nodes=("n1",), session_ttl_min=1.0, rpc_hold_timeout=0.5) as double:
        yield double


def run_sidecar(consul: ConsulDouble, listen: str | None) -> subprocess.CompletedProcess[str]:
    """`python -m consul_leader` against the stand-in; killed if it is still up after 20 s."""
    env = sidecar_env(consul.node_addr("n1"), 0)
    env.pop("CONSUL_LEADER_LISTEN")
    if listen is not None:
        env["CONSUL_LEADER_LISTEN"] = listen
    return subprocess.run([sys.executable, "-m", "consul_leader"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=20, check=False)


def listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A socket listening on (host, port), as another sidecar on the host would have."""
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        holder.bind((host, port))
        holder.listen()
    except OSError:
        holder.close()
        raise
    return holder


def default_port_listener() -> socket.socket | None:
    """Port 9500 taken by us; None when someone else on this machine has it already."""
    try:
        return listener(socket.AF_INET6, "::", DEFAULT_PORT)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        return None


# (what holds the port, CONSUL_LEADER_LISTEN with {port} filled in; None: unset, the default)
BUSY = {
    "ipv4 address taken": ("ipv4", "127.0.0.1:{port}"),
    "every interface, dual-stack taken": ("dual", ":{port}"),
    "every interface, ipv4 wildcard taken": ("ipv4-any", ":{port}"),
    "default :9500 taken (second sidecar on a host)": ("default", None),
}


@contextlib.contextmanager
def holding(kind: str) -> Iterator[int]:
    """The port of a listener of `kind`, held for the block."""
    if kind == "default":
        holder = default_port_listener()
    else:
        family, host = {"ipv4": (socket.AF_INET, "127.0.0.1"), "dual": (socket.AF_INET6, "::"),
                        "ipv4-any": (socket.AF_INET, "0.0.0.0")}[kind]
        holder = listener(family, host, 0)
    try:
        yield DEFAULT_PORT if holder is None else holder.getsockname()[1]
    finally:
        if holder is not None:
            holder.close()


@pytest.mark.parametrize("case", sorted(BUSY))
def test_busy_listen_address_exits_2_with_one_line_before_any_request(
        case: str, consul: ConsulDouble) -> None:
    kind, listen = BUSY[case]
    with holding(kind) as port:
        consul.reset_stats()
        done = run_sidecar(consul, None if listen is None else listen.format(port=port))

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, f"expected one line, got: {done.stderr}"
    assert lines[0].startswith("consul-leader: configuration error: CONSUL_LEADER_LISTEN=")
    assert f":{port}" in lines[0] and "Address already in use" in lines[0]
    assert "Traceback" not in done.stderr
    assert request_count(consul) == 0, "a busy listen address must not reach Consul"


def test_port_alone_listens_on_ipv6_and_ipv4(consul: ConsulDouble, tmp_path: Path) -> None:
    port = free_port()
    env = sidecar_env(consul.node_addr("n1"), port, CONSUL_LEADER_LISTEN=f":{port}")
    sidecar = Sidecar(name="dual", node="n1", agent=consul.node_addr("n1"), alloc_id="",
                      service_id="", status_port=port, env=env, log_path=tmp_path / "dual.log")
    with stopped_at_exit([sidecar]):
        sidecar.start()
        wait_for(lambda: live_on("127.0.0.1", port), 10.0, "/livez on 127.0.0.1")
        assert live_on("[::1]", port), "/livez on [::1]"
    assert sidecar.wait(timeout=1.0) == 0


def live_on(host: str, port: int) -> bool:
    return requests.get(f"http://{host}:{port}/livez", timeout=1).status_code == 200


def help_command() -> list[str]:
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} missing: install the project (make)"
    return [str(CONSOLE_SCRIPT), "--help"]


def test_help_fits_80_columns() -> None:
    done = subprocess.run(help_command(), capture_output=True, text=True, timeout=20,
                          check=False)

    assert done.returncode == 0
    too_wide = [line for line in done.stdout.splitlines() if len(line) > HELP_WIDTH]
    assert too_wide == []
    assert "CONSUL_LEADER_LISTEN" in done.stdout


@pytest.mark.parametrize("argument", ["--help", "--version"])
def test_a_closed_pipe_is_no_traceback(argument: str) -> None:
    # The reader is gone before the first write: every write fails, deterministically.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run([str(CONSOLE_SCRIPT), argument], stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=20, check=False)
    finally:
        os.close(writer)

    assert (done.returncode, done.stderr) == (0, "")


def test_help_piped_into_head() -> None:
    script = 'set -o pipefail; "$0" --help | head -1'
    done = subprocess.run(["bash", "-c", script, help_command()[0]], capture_output=True,
                          text=True, timeout=20, check=False)

    assert (done.returncode, done.stdout, done.stderr) == (
        0, "usage: consul-leader [--help] [--version]\n", "")
