"""A model of Nomad clients: their service registrations in Consul and the lifecycle of
their allocations, run against the Consul stand-in (tests/consul_double) over HTTP.

Ground truth for how Nomad treats the services it owns. Every behaviour cites the Nomad
file and function it follows (read at hashicorp/nomad aa026cc9); where the model
differs from Nomad, the list at the end says so.

    from tests.consul_double import ConsulDouble
    from tests.nomad_double import NomadDouble, SyncSettings, leader_job

    with ConsulDouble(nodes=("n1", "n2", "n3"), session_ttl_min=1.0) as consul, \
            NomadDouble.for_consul(consul, workdir, sync=SyncSettings(period=2.0)) as nomad:
        allocations = nomad.run_job(leader_job(
            count=3, extra_ports=("leader",),
            sidecar_env={"CONSUL_LEADER_SERVICE_NAME": "db",
                         "CONSUL_LEADER_LISTEN": "127.0.0.1:${NOMAD_PORT_leader}"}))
        allocations[0].wait_running(5.0)
        sync = nomad.client("n1").service_client
        sync.sync_now("periodic")            # or "operations"
        sync.stored_service(allocations[0].service_ids()[0]), sync.counters()
        allocations[0].set_health("unhealthy")      # what its script check reports
        nomad.restart_client("n2", downtime=1.0); nomad.drain("n3")
        allocations[0].stop()                # Nomad's kill order, tokens revoked

API
* NomadDouble(nodes, workdir, sync=SyncSettings(), acl=AclSettings|None, host_env,
  seed) / NomadDouble.for_consul(consul, workdir, ...): one NomadClient per node;
  context manager. run_job(job, nodes=None) places `count` allocations (round robin
  over eligible nodes, or the nodes given) and starts them without waiting;
  allocations(job, node), stop_job(job), drain(node, deadline, replace),
  restart_client(node, downtime, graceful), set_eligible(node, bool), client(node).
  Leaving the block stops every live allocation in Nomad's order, ends the sync loops,
  SIGKILLs any process left and joins every thread, also after an exception.
* NomadClient: service_client (the current ServiceClient), place(job, group, index,
  canary), restart(...), live_allocations(), eligible. NodeConfig(name, consul,
  address, meta): meta is ${meta.<key>} in jobs; ${meta.consul_http_addr} defaults to
  the node's agent (point it at a fault proxy for chaos runs).
* ServiceClient (service_client.go): sync_now(reason) -> SyncRecord, set_period(s,
  rearm=True), period, stored_service(id) / stored_services() / stored_checks() (deep
  copies of Nomad's stored copy), counters() -> SyncCounters (syncs by reason,
  failed_syncs, service_(re)registrations, deregistrations, check counts), sync_log(),
  wait_idle(t), wait_synced(seq, t), wait_for_sync(after, t, reason), in_probation,
  register_workload / update_workload / remove_workload / update_ttl (what hooks call).
* Allocation (alloc_runner.go): id, node, index, name, ports, tasks, task(name),
  service_ids(), wait_running(t), running(), set_health(healthy|warning|unhealthy|
  flapping, task=None), checks(), checks_healthy(), deployment_healthy(), update(canary),
  stop(), tokens / task_token(task) / revoked_tokens, events, finished.
* TaskRunner (task_runner.go): state (pending|running|dead), failed, restarts, env,
  dirs (alloc/task/secrets dirs, stdout/stderr log files), events, process (current
  TaskProcess) and processes (every run). TaskProcess: pid, send_signal(sig),
  wait(t), running(), exit_code, started/ended, logs(stream), shutdown(sig, grace).
* Jobs (jobspec.py): Job, TaskGroup(ports, restart, migrate, shutdown_delay), Task
  (command, env, services, lifecycle, leader, kill_timeout, kill_signal,
  shutdown_delay, consul_identity, cwd), Service (tags, canary_tags, meta, canary_meta,
  enable_tag_override, tagged_addresses, weights, address, checks, identity), Check
  (script checks), RestartPolicy, Migrate, Lifecycle. leader_job(...) is the project's
  job: prestart sidecar task "leader" (SIDECAR_COMMAND, the module constant, read at
  call time) beside main task "db" with service "db" on port label "db"; its service
  ID is _nomad-task-<alloc>-db-db-db. STUB_COMMAND is stub.py, a tiny task that
  records its environment and signals.
* Command: python -m tests.nomad_double --consul <agent>[,<agent>...] --count N
  [--sync-period 30s --probation 1m --sidecar-env K=V --sidecar-command CMD --control
  URL --agent-token T]: see __main__.py.

What it models
* The sync loop (service_client.go Run/sync/merge/commit): first contact through
  /v1/agent/self, an immediate sync, then one per queued operation and one per period
  (30 s by default); every sync re-arms the timer; failures back off retry_interval x
  failures up to 30 s. Each sync reads the agent view of its own node
  (/v1/agent/services and /checks, with the Nomad agent's token), removes unknown
  _nomad-task- services and _nomad-check- checks (after the 1-minute probation that
  every new ServiceClient starts with; explicitly deregistered ones at once), registers
  missing or different services with replace-existing-checks (service identity token),
  then missing checks. agentServiceUpdateRequired: only a periodic sync adopts agent
  tags under enable_tag_override (maybeTweakTags, into the stored copy); Consul's
  injected lan/wan addresses are ignored (maybeTweakTaggedAddresses); different()
  compares kind, ID, port, address, name, ETO, Meta, tagged addresses, tags as a set
  (helper.SliceSetEq), weights.
* Registrations (serviceRegs, checkRegs, createCheckReg, MakeAllocServiceID,
  MakeCheckID): IDs, tags or canary tags, Meta with external-source=nomad, address and
  port, tagged addresses, weights; a script check is a TTL check of interval + 31 s
  (ttlCheckBuffer) heartbeated by Nomad (script_check_hook.go: 0 passing, 1 warning,
  else critical; an exec into a stopped task fails: critical; one retry after 1 s).
* Allocations: Prerun hooks in order (consul_hook: workload identity tokens; group
  services queued); prestart sidecar tasks start first, main tasks once they run
  (tasklifecycle/coordinator.go); task services queued in Poststart; a task that
  exits is deregistered (Exited) and restarted after delay + up to 25 % jitter within
  attempts/interval, mode fail or delay (restarts.go); a failed task or a dead leader
  kills the rest, sidecars are killed when only they remain (handleTaskStateUpdates).
  Stop = killTasks: group services deregistered then group shutdown_delay, the leader
  task, the other main tasks together, then sidecars; each task deregisters its
  services (PreKilling), waits its shutdown_delay, gets kill_signal (SIGTERM: the
  docker driver with the project's STOPSIGNAL), SIGKILL after kill_timeout (capped at
  30 s), then its process group is SIGKILLed (executor.go Shutdown). Postrun revokes
  every token of the allocation after all tasks exited.
* Tasks are real processes in their own session, in the task directory, with Nomad's
  variables (NOMAD_ALLOC_ID/_DIR/_INDEX/_NAME, NOMAD_TASK_DIR/_NAME, NOMAD_SECRETS_DIR,
  NOMAD_GROUP_NAME, NOMAD_JOB_ID/_NAME, NOMAD_NAMESPACE, NOMAD_DC, NOMAD_REGION,
  NOMAD_PORT_/ADDR_/IP_/HOST_PORT_<label>), the task's env block interpolated, then
  CONSUL_TOKEN/CONSUL_HTTP_TOKEN from the task's Consul identity (token also in
  secrets/consul_token, mode 0640); stdout and stderr to alloc/logs/<task>.std*.0.
* ACLs (AclSettings): per allocation, a service identity token per service (used for
  its registrations, checks and heartbeats) and a task token per task with
  consul_identity (the sidecar), made through the stand-in's control API and revoked
  in Postrun. Listing and deregistration use the Nomad agent's token, as in Nomad.
* Client restart (agent.go, client.go): tasks keep running; the old service client
  makes a last sync (or none when not graceful); a new one (empty stored copy, new
  probation) syncs once, then allocations are restored: tokens reused, group and task
  services registered again from the jobspec, so operations syncs push the jobspec
  tags back (adopted tags are forgotten) and replace-existing-checks drops foreign
  checks; unknown _nomad- services of the node survive until probation ends.
* Drain (drainer/watch_jobs.go handleTaskGroup): the node turns ineligible; per group
  only healthy - (count - max_parallel) allocations are stopped at a time, each
  replaced on the eligible node running the fewest of its group; the rest are stopped
  at the deadline.

Simplified or not modelled (and why)
* No servers: placement is the caller's, failed allocations are not rescheduled, no
  deployments (canary promotion is Allocation.update(canary=False)), no evaluations.
* Drain health: tasks running for min_healthy_time and checks healthy at that
  instant, instead of the tracker's continuous timer; system jobs are not special.
* Checks: script checks only (the stand-in runs no HTTP/TCP/gRPC checks); Nomad
  refuses pass/fail thresholds for them, so does the model; intervals below Nomad's
  1 s minimum are accepted for fast tests; check_restart (check watcher) is not run.
* Connect, gateways, Consul namespaces/partitions/clusters, the Nomad agent's own
  _nomad-client- services, templates, Vault, volumes and resources are not modelled.
* Lifecycle hooks: main tasks and prestart sidecars only.
* Go's select picks a ready case at random; the model takes shutdown, an operation,
  a sync_now request, the timer, in that order. Nomad's operations channel holds 8 and
  blocks callers; the model's queue does not block. On client restart the new
  service client's first sync always runs before the restore (a race in Nomad that
  almost always goes this way, agent.go setupConsuls before setupClient).
* Check IDs hash the same fields as ServiceCheck.Hash but not the same bytes;
  UpdateWorkload compares rendered registrations (plus the canary flag) instead of
  Service.Hash.
* Tasks run raw_exec-like (host paths, task directory as cwd) with docker's stop signal
  and without the agent's environment (host_env: PATH unless given).
* Workload identity login is the stand-in's token control, not a JWT auth method.
"""

from .alloc_runner import Allocation
from .client import AclSettings, NodeConfig, NomadClient, service_identity_rules
from .cluster import NomadDouble
from .compare import SYNC_OPERATIONS, SYNC_PERIODIC, SYNC_SHUTDOWN, different
from .jobs import SIDECAR_COMMAND, STUB_COMMAND, leader_job
from .jobspec import (
    FLAPPING,
    HEALTHY,
    UNHEALTHY,
    WARNING,
    Check,
    Job,
    Lifecycle,
    Migrate,
    RestartPolicy,
    Service,
    Task,
    TaskGroup,
)
from .service_client import ServiceClient, SyncCounters, SyncRecord, SyncSettings
from .task_runner import TaskRunner

__all__ = [
    "FLAPPING", "HEALTHY", "SIDECAR_COMMAND", "STUB_COMMAND", "SYNC_OPERATIONS",
    "SYNC_PERIODIC", "SYNC_SHUTDOWN", "UNHEALTHY", "WARNING", "AclSettings", "Allocation",
    "Check", "Job", "Lifecycle", "Migrate", "NodeConfig", "NomadClient", "NomadDouble",
    "RestartPolicy", "Service", "ServiceClient", "SyncCounters", "SyncRecord",
    "SyncSettings", "Task", "TaskGroup", "TaskRunner", "different", "leader_job",
    "service_identity_rules",
]
