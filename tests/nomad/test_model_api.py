"""The model as a tool: process handles, job updates, clean exits, the command line."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from tests.harness import REPO, wait_for
from tests.nomad_double import STUB_COMMAND, Job, NomadDouble, leader_job

from .conftest import FAST, agent_get

StartNomad = Callable[..., NomadDouble]


def stub_job(**options: Any) -> Job:
    settings: dict[str, Any] = {"sidecar_command": STUB_COMMAND, "check_interval": 0.1,
                                "kill_timeout": 1.0, "sidecar_kill_timeout": 1.0}
    return leader_job(**{**settings, **options})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_task_process_handle_signals_wait_and_logs(nomad_double: StartNomad) -> None:
    nomad = nomad_double()
    allocation = nomad.run_job(stub_job(count=1))[0]
    allocation.wait_running(5.0)
    process = allocation.task("leader").process
    assert process is not None
    wait_for(lambda: "started" in process.logs(), 3.0, "the stub started")

    assert process.send_signal(signal.SIGSTOP)
    assert process.wait(0.1) is None and process.running()
    assert process.send_signal(signal.SIGCONT) and process.send_signal(signal.SIGUSR1)
    wait_for(lambda: "signal SIGUSR1" in process.logs("stdout"), 3.0, "SIGUSR1 recorded")
    assert process.send_signal(signal.SIGTERM)
    assert process.wait(3.0) == 0 and process.exit_code == 0 and not process.running()
    assert not process.send_signal(signal.SIGTERM)  # gone


def test_UpdateWorkload_canary_tags_until_promotion(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """service_client.go (serviceRegs: canary_tags on a canary; UpdateWorkload: a
    changed service is queued again, an operations sync registers it)."""
    nomad = nomad_double(period=60.0)
    job = stub_job(count=1, canary_tags=("v2", "canary"))
    allocation = nomad.client("n1").place(job, "db", 0, canary=True)
    allocation.wait_running(5.0)
    service_id = allocation.service_ids()[0]

    def tags() -> list[str] | None:
        service = agent_get(consul, "n1", "/v1/agent/services").json().get(service_id)
        return service["Tags"] if service else None

    wait_for(lambda: tags() == ["v2", "canary"], 3.0, "canary tags")
    allocation.update(canary=False)  # the deployment is promoted
    assert allocation.client.service_client.wait_idle(3.0)
    assert tags() == ["v1"]
    last = allocation.client.service_client.sync_log()[-1]
    assert last.reason == "operations" and last.reregistered == (service_id,)


def test_context_manager_stops_everything_even_after_an_exception(
        consul: ConsulDouble, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), NomadDouble.for_consul(
            consul, tmp_path, sync=FAST) as nomad:
        allocations = nomad.run_job(stub_job(count=3, main_env={"STUB_ON_SIGTERM": "ignore"},
                                             kill_timeout=0.3))
        for allocation in allocations:
            allocation.wait_running(5.0)
            pids.extend(r.process.pid for r in allocation.tasks.values() if r.process)
        raise RuntimeError("boom")

    assert len(pids) == 6 and not any(pid_alive(pid) for pid in pids)
    wait_for(lambda: not (set(threading.enumerate()) - before), 3.0, "no thread left")
    for node in consul.node_names:
        assert not agent_get(consul, node, "/v1/agent/services").json()


def logged(path: Path, text: str) -> bool:
    return text in path.read_text()


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no line from the command in time"
    return process.stdout.readline()


def test_command_runs_a_job_and_stops_it_in_nomads_order_on_sigterm(
        consul: ConsulDouble, tmp_path: Path) -> None:
    addresses = ",".join(consul.node_addr(node) for node in consul.node_names)
    command = [
        sys.executable, "-m", "tests.nomad_double", "--consul", addresses, "--count", "3",
        "--sync-period", "0.5", "--check-interval", "0.2", "--workdir", str(tmp_path),
        "--sidecar-command", " ".join(STUB_COMMAND), "--sidecar-env", "X_FROM_TEST=1",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(read_line(process, 15.0))
        services = {node: agent_get(consul, node, "/v1/agent/services").json()
                    for node in consul.node_names}
        for allocation in ready["allocations"]:  # the stubs handle signals from now on
            stdout = Path(allocation["tasks"]["leader"]["stdout"])
            wait_for(partial(logged, stdout, "started"), 5.0, f"{stdout} started")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert sorted(ready["nodes"]) == ["n1", "n2", "n3"]
    allocations = ready["allocations"]
    assert [a["node"] for a in allocations] == ["n1", "n2", "n3"]
    for allocation in allocations:
        assert allocation["services"][0] in services[allocation["node"]]
        assert not pid_alive(allocation["tasks"]["leader"]["pid"])
        assert logged(Path(allocation["tasks"]["leader"]["stdout"]), "signal SIGTERM")
    for node in consul.node_names:
        assert not agent_get(consul, node, "/v1/agent/services").json()


def test_agent_client_counts_what_the_agent_answered(consul: ConsulDouble) -> None:
    """AgentClient.answered: every request the agent answered, errors included, as the
    stand-in's own statistics count them (what a benchmark takes off the node's load)."""
    from tests.nomad_double.consul_api import AgentClient, ConsulError

    client = AgentClient(consul.node_addr("n2"))
    consul.reset_stats()
    client.services()
    with pytest.raises(ConsulError):
        client.service("no-such-service")  # 404: answered all the same
    assert client.answered == 2
    assert consul.stats()["nodes"]["n2"]["total"] == 2
