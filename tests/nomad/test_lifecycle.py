"""Allocations of the model: real processes, Nomad's order, restarts, tokens, client
restart, drain. The sidecar is tests/nomad_double/stub.py (records env and signals).

Each test names the Nomad function it follows.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from tests.harness import wait_for
from tests.nomad_double import (
    FLAPPING,
    STUB_COMMAND,
    UNHEALTHY,
    WARNING,
    Allocation,
    Check,
    Migrate,
    NomadDouble,
    RestartPolicy,
    Service,
    leader_job,
)
from tests.nomad_double.jobspec import Job

from .conftest import agent_get, agent_put

StartNomad = Callable[..., NomadDouble]
IGNORE_SIGTERM = {"STUB_ON_SIGTERM": "ignore"}


def stub_job(**options: Any) -> Job:
    settings: dict[str, Any] = {
        "sidecar_command": STUB_COMMAND, "check_interval": 0.1, "kill_timeout": 1.0,
        "sidecar_kill_timeout": 1.0, "sidecar_env": {"CONSUL_LEADER_SERVICE_NAME": "db"},
    }
    settings.update(options)
    return leader_job(**settings)


def started(nomad: NomadDouble, job: Job, nodes: list[str] | None = None) -> list[Allocation]:
    """Run the job; return once every stub has installed its signal handlers (it writes
    its environment after that) and every client has synced."""
    allocations = nomad.run_job(job, nodes)
    for allocation in allocations:
        allocation.wait_running(5.0)
        for task in allocation.tasks:
            recorded_env(allocation, task)
    for client in nomad.clients:
        assert client.service_client.wait_idle(3.0)
    return allocations


def agent_services(consul: ConsulDouble, node: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = agent_get(consul, node, "/v1/agent/services").json()
    return result


def signal_times(allocation: Allocation, task: str, name: str = "SIGTERM") -> list[float]:
    lines = allocation.task(task).processes[-1].logs("stdout").splitlines()
    return [float(line.split()[-1]) for line in lines if line.startswith(f"signal {name} ")]


def recorded_env(allocation: Allocation, task: str) -> dict[str, Any]:
    path = allocation.task(task).dirs.local / "stub-env.json"
    wait_for(path.exists, 3.0, f"{path} written")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def event_time(allocation: Allocation, task: str, kind: str) -> float:
    return next(e.at for e in allocation.task(task).events if e.type == kind)


# -- start ------------------------------------------------------------------------------------


def test_coordinator_starts_prestart_sidecar_then_main_then_Poststart_registers(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """tasklifecycle/coordinator.go: main tasks wait for the prestart sidecar to run;
    service_hook.go (Poststart): task services are registered once their task started."""
    nomad = nomad_double()
    allocation = started(nomad, stub_job(count=1))[0]
    service_id = allocation.service_ids()[0]

    sidecar_started = event_time(allocation, "leader", "Started")
    main_started = event_time(allocation, "db", "Started")
    registration = next(r for r in allocation.client.service_client.sync_log()
                        if service_id in r.registered)
    assert sidecar_started < main_started < registration.started
    service = agent_services(consul, allocation.node)[service_id]
    assert service_id == f"_nomad-task-{allocation.id}-db-db-db"
    assert service["Meta"] == {"external-source": "nomad"} and service["Tags"] == ["v1"]
    assert service["EnableTagOverride"] is True
    assert service["Port"] == allocation.ports["db"] and service["Address"] == "127.0.0.1"


def test_group_service_hook_Prerun_registers_group_services_before_tasks_start(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """group_service_hook.go (Prerun) + workload.go (Name: "group-<group>"): queued
    before any task starts (the sync loop writes it a moment later)."""
    nomad = nomad_double()
    job = stub_job(count=1)
    group = replace(job.groups[0], services=(Service("db-group", "db", tags=("g",)),))
    allocation = started(nomad, replace(job, groups=(group,)))[0]
    group_id = f"_nomad-task-{allocation.id}-group-db-db-group-db"

    assert group_id in allocation.service_ids()
    committed = next(e.at for e in allocation.events if e.type == "Group services committed")
    assert committed < event_time(allocation, "leader", "Started")
    assert agent_services(consul, allocation.node)[group_id]["Tags"] == ["g"]


def test_taskenv_sidecar_gets_nomads_environment_and_the_jobs_env(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """taskenv/env.go (Builder.buildEnv): Nomad's variables, then the task's env block
    (interpolated); the task runs in its task directory (raw_exec)."""
    nomad = nomad_double()
    allocation = started(nomad, stub_job(count=2), ["n1", "n2"])[1]
    recorded = recorded_env(allocation, "leader")
    env, dirs = recorded["env"], allocation.task("leader").dirs

    assert env["NOMAD_ALLOC_ID"] == allocation.id
    assert env["NOMAD_ALLOC_INDEX"] == "1"
    assert env["NOMAD_ALLOC_NAME"] == "db.db[1]"
    assert (env["NOMAD_TASK_NAME"], env["NOMAD_GROUP_NAME"], env["NOMAD_JOB_NAME"]) == (
        "leader", "db", "db")
    assert (env["NOMAD_NAMESPACE"], env["NOMAD_DC"]) == ("default", "dc1")
    assert env["NOMAD_ALLOC_DIR"] == str(dirs.shared)
    assert env["NOMAD_TASK_DIR"] == str(dirs.local) == recorded["cwd"]
    assert env["NOMAD_SECRETS_DIR"] == str(dirs.secrets)
    assert env["NOMAD_PORT_db"] == str(allocation.ports["db"])
    assert env["CONSUL_HTTP_ADDR"] == consul.node_addr("n2")  # ${meta.consul_http_addr}
    assert env["CONSUL_LEADER_SERVICE_NAME"] == "db"
    assert "CONSUL_HTTP_TOKEN" not in env  # no ACLs, no workload identity token
    assert dirs.stdout.name == "leader.stdout.0" and "started" in dirs.stdout.read_text()


def test_consul_hook_workload_identity_token_file_env_and_registrations(
        consul_acl: ConsulDouble, nomad_acl: NomadDouble) -> None:
    """allocrunner/consul_hook.go (Prerun) + taskrunner/consul_hook.go (Prestart): the
    sidecar's own token in secrets/consul_token, CONSUL_TOKEN and CONSUL_HTTP_TOKEN;
    services are registered with their service identity token."""
    allocation = started(nomad_acl, stub_job(count=1, token_file=True))[0]
    env = recorded_env(allocation, "leader")["env"]
    token_file = Path(env["CONSUL_HTTP_TOKEN_FILE"])
    token = token_file.read_text()

    assert token_file == allocation.task("leader").dirs.secrets / "consul_token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o640"
    assert env["CONSUL_HTTP_TOKEN"] == env["CONSUL_TOKEN"] == token
    assert token in allocation.tokens and len(allocation.tokens) == 2  # task + service
    assert "CONSUL_TOKEN" not in recorded_env(allocation, "db")["env"]  # no identity
    service_id = allocation.service_ids()[0]
    reply = agent_get(consul_acl, allocation.node, f"/v1/agent/service/{service_id}", token)
    assert reply.status_code == 200  # the sidecar's token works against its agent


# -- checks -----------------------------------------------------------------------------------


def check_status(allocation: Allocation) -> str | None:
    checks = allocation.checks()
    return checks[0].status if checks else None


def test_script_check_hook_heartbeats_a_ttl_check_with_the_apps_health(
        nomad_double: StartNomad) -> None:
    """script_check_hook.go (newScriptCheckCallback) via createCheckReg: a TTL check
    Nomad updates through the agent API: exit 0 passing, 1 warning, else critical."""
    nomad = nomad_double()
    allocation = started(nomad, stub_job(count=1))[0]
    wait_for(lambda: check_status(allocation) == "passing", 3.0, "passing")
    assert allocation.checks_healthy()

    allocation.set_health(WARNING)
    wait_for(lambda: check_status(allocation) == "warning", 3.0, "warning")
    assert not allocation.checks_healthy()
    allocation.set_health(UNHEALTHY)
    wait_for(lambda: check_status(allocation) == "critical", 3.0, "critical")
    allocation.set_health(FLAPPING)
    seen: set[str | None] = set()

    def flapped() -> bool:
        seen.add(check_status(allocation))
        return {"passing", "critical"} <= seen

    wait_for(flapped, 3.0, "flapping between passing and critical")
    check = allocation.checks()[0]
    assert check.check_id.startswith("_nomad-check-") and len(check.check_id) == 13 + 64


def test_createCheckReg_ttl_is_interval_plus_buffer_and_thresholds_are_refused(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """service_client.go (createCheckReg): TTL = interval + ttlCheckBuffer;
    services.go (validateConsul): pass/fail thresholds only for tcp, http, grpc."""
    nomad = nomad_double(ttl_check_buffer=31.0)
    allocation = started(nomad, stub_job(count=1, check_interval=0.5))[0]
    stored = allocation.client.service_client.stored_checks()
    assert [check["TTL"] for check in stored.values()] == ["31.5s"]
    with pytest.raises(ValueError, match="failures_before_critical not supported"):
        Check("alive", failures_before_critical=3)


def test_allochealth_evaluateConsulChecks_counts_only_nomads_checks(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    nomad = nomad_double()
    allocation = started(nomad, stub_job(count=1))[0]
    wait_for(allocation.checks_healthy, 3.0, "healthy")
    agent_put(consul, allocation.node, "/v1/agent/check/register", {
        "ID": "sidecar-role", "Name": "role", "ServiceID": allocation.service_ids()[0],
        "TTL": "30s"})  # critical, but not Nomad's

    assert allocation.checks_healthy()


# -- stop -------------------------------------------------------------------------------------


def test_killTasks_main_first_then_sidecar_with_kill_timeout(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """alloc_runner.go (killTasks) + task_runner.go (handleKill): the main task (which
    ignores SIGTERM) gets SIGKILL after kill_timeout; the sidecar gets SIGTERM only
    after the main task is gone. The task's services are deregistered first (PreKilling
    queues it before the kill signal; the sync loop carries it out a moment later)."""
    nomad = nomad_double()
    job = stub_job(count=1, kill_timeout=0.5, main_env=IGNORE_SIGTERM)
    allocation = started(nomad, job)[0]
    main, sidecar = allocation.task("db"), allocation.task("leader")
    service_id = allocation.service_ids()[0]

    allocation.stop()

    main_process, sidecar_process = main.processes[-1], sidecar.processes[-1]
    sent = dict((name, at) for at, name in main_process.signals_sent)
    main_term = sent["SIGTERM"]
    assert signal_times(allocation, "db")  # the task saw SIGTERM and ignored it
    assert main_process.exit_code == -signal.SIGKILL
    assert main_process.ended is not None and sidecar_process.ended is not None
    assert 0.5 <= sent["SIGKILL"] - main_term < 0.6
    sidecar_term = signal_times(allocation, "leader")[0]
    assert main_process.ended < sidecar_term
    assert sidecar_process.exit_code == 0
    deregistration = next(r for r in allocation.client.service_client.sync_log()
                          if service_id in r.deregistered)
    assert event_time(allocation, "db", "Killing") < main_term
    assert deregistration.finished < sidecar_term
    assert service_id not in agent_services(consul, allocation.node)
    assert (main.state, sidecar.state) == ("dead", "dead")


def test_consul_hook_Postrun_revokes_tokens_after_the_tasks_exit(
        consul_acl: ConsulDouble, nomad_acl: NomadDouble) -> None:
    allocation = started(nomad_acl, stub_job(count=1, token_file=True))[0]
    token = allocation.task_token("leader")
    assert token is not None
    assert agent_get(consul_acl, allocation.node, "/v1/agent/services", token).status_code == 200

    allocation.stop()

    assert sorted(allocation.revoked_tokens) == sorted(allocation.tokens)
    reply = agent_get(consul_acl, allocation.node, "/v1/agent/services", token)
    assert reply.status_code == 403 and "ACL not found" in reply.text
    revoked_at = next(e.at for e in allocation.events if e.type == "Tokens revoked")
    assert allocation.task("leader").processes[-1].ended < revoked_at  # type: ignore[operator]


def test_handleTaskStateUpdates_sidecar_killed_when_main_task_fails(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """restarts.go (GetState, attempts 0: not restarting) + alloc_runner.go
    (handleTaskStateUpdates: a failed sibling kills the other tasks)."""
    nomad = nomad_double()
    job = stub_job(count=1, main_env={"STUB_EXIT_AFTER": "0.3"},
                   restart=RestartPolicy(attempts=0))
    allocation = started(nomad, job)[0]

    wait_for(lambda: allocation.finished, 5.0, "allocation finished")

    assert allocation.task("db").failed and allocation.task("leader").state == "dead"
    assert signal_times(allocation, "leader")  # the sidecar was sent its kill signal
    assert allocation.service_ids()[0] not in agent_services(consul, allocation.node)


# -- restart ----------------------------------------------------------------------------------


def test_RestartTracker_restarts_after_the_policy_delay_and_reregisters(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """restarts.go (jitter: delay + up to 25%) + service_hook.go (Exited deregisters,
    Poststart registers again)."""
    nomad = nomad_double()
    delay = 0.4
    job = stub_job(count=1, restart=RestartPolicy(attempts=2, delay=delay))
    allocation = started(nomad, job)[0]
    main = allocation.task("db")
    service_id = allocation.service_ids()[0]
    first = main.processes[0]

    first.send_signal(signal.SIGKILL)  # the application crashes
    wait_for(lambda: len(main.processes) == 2 and main.state == "running", 3.0, "restarted")
    second = main.processes[1]
    assert first.ended is not None
    assert delay <= second.started - first.ended < delay * 1.25 + 0.15
    assert main.restarts == 1
    log = allocation.client.service_client.sync_log()
    assert any(service_id in r.deregistered for r in log)  # Exited hook
    wait_for(lambda: service_id in agent_services(consul, allocation.node), 3.0, "back")


# -- the client --------------------------------------------------------------------------------


@pytest.mark.parametrize("graceful", [True, False])
def test_client_restart_resyncs_every_service_with_a_new_probation(
        consul: ConsulDouble, nomad_double: StartNomad, graceful: bool) -> None:
    """agent.go (setupConsuls before setupClient) + client.go (restoreState) +
    service_client.go (NewServiceClient: empty stored copy, new probation): tasks keep
    running; restored services are registered from the jobspec by operations syncs, so
    tags adopted before the restart and third-party checks are gone."""
    nomad = nomad_double(period=60.0)
    allocation = started(nomad, stub_job(count=1))[0]
    node, service_id = allocation.node, allocation.service_ids()[0]
    client = nomad.client(node)
    current = agent_services(consul, node)[service_id]
    agent_put(consul, node, "/v1/agent/service/register", {
        "ID": service_id, "Name": "db", "Port": current["Port"],
        "Address": current["Address"], "Tags": ["v1", "primary"],
        "Meta": current["Meta"], "EnableTagOverride": True})
    agent_put(consul, node, "/v1/agent/check/register",
              {"ID": "role", "Name": "role", "ServiceID": service_id, "TTL": "30s"})
    client.service_client.sync_now("periodic")  # adopts ["v1", "primary"]
    pids = {name: runner.process.pid for name, runner in allocation.tasks.items()
            if runner.process}

    nomad.restart_client(node, downtime=0.2, graceful=graceful)

    after = client.service_client
    assert client.restarts == 1 and after.in_probation
    assert after.wait_idle(3.0)
    assert {name: r.process.pid for name, r in allocation.tasks.items() if r.process} == pids
    service = agent_services(consul, node)[service_id]
    assert service["Tags"] == ["v1"]
    assert "role" not in agent_get(consul, node, "/v1/agent/checks").json()
    reasons = [(r.reason, bool(r.reregistered)) for r in after.sync_log()]
    assert reasons[0] == ("periodic", False)  # first sync, before the restore: nothing
    assert ("operations", True) in reasons


def test_client_restart_probation_keeps_unknown_services_of_the_node(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """service_client.go (deregisterProbationPeriod): after a restart, services of
    allocations the client no longer knows stay for the probation, then go."""
    nomad = nomad_double(period=0.2, probation=0.6)
    allocation = started(nomad, stub_job(count=1))[0]
    stray = f"_nomad-task-{'0' * 36}-db-db-db"
    agent_put(consul, allocation.node, "/v1/agent/service/register",
              {"ID": stray, "Name": "db", "Port": 1})

    nomad.restart_client(allocation.node)
    assert stray in agent_services(consul, allocation.node)

    wait_for(lambda: stray not in agent_services(consul, allocation.node), 3.0,
             "the stray service removed after probation")


def test_drain_migrates_one_allocation_at_a_time_with_replacements(
        consul: ConsulDouble, nomad_double: StartNomad) -> None:
    """drainer/watch_jobs.go (handleTaskGroup): with max_parallel 1 the second
    allocation on the draining node is stopped only once the first one's replacement
    has been healthy for min_healthy_time; the node ends ineligible."""
    nomad = nomad_double()
    job = stub_job(count=3)
    migrate = Migrate(max_parallel=1, min_healthy_time=0.3)
    job = replace(job, groups=(replace(job.groups[0], migrate=migrate),))
    allocations = started(nomad, job, ["n1", "n1", "n2"])
    for allocation in allocations:
        wait_for(allocation.checks_healthy, 3.0, f"{allocation} healthy")
    time.sleep(migrate.min_healthy_time)  # the allocations have been healthy that long

    replacements = nomad.drain("n1", deadline=10.0)

    assert [r.node for r in replacements] == ["n3", "n2"]  # fewest of the group first
    assert {a.node for a in nomad.allocations("db")} == {"n2", "n3"}
    assert len(nomad.allocations("db")) == 3 and not nomad.client("n1").eligible
    _, second_stop = sorted(
        next(e.at for e in a.events if e.type == "killTasks") for a in allocations[:2])
    first_replacement_started = event_time(replacements[0], "db", "Started")
    assert second_stop >= first_replacement_started + migrate.min_healthy_time
    assert not agent_services(consul, "n1")
