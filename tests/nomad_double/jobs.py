"""The job the project runs: a database-like main task with its service, and the
leader-election sidecar beside it as a prestart sidecar task.

    group "db" {
      count = 3
      network { port "db" {} }
      task "leader" { lifecycle { hook = "prestart"  sidecar = true } ... }
      task "db" {
        service { name = "db"  port = "db"  tags = ["v1"]  enable_tag_override = true
                  check { type = "script"  name = "alive"  interval = "..." } }
      }
    }

Service IDs: `_nomad-task-<alloc>-db-db-db` (task "db", service "db", port label "db"),
the ID tests/harness.py's nomad_service_id gives.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .jobspec import Check, Job, Lifecycle, RestartPolicy, Service, Task, TaskGroup

# How a task starts the sidecar (the console script's module, as the image runs it).
SIDECAR_COMMAND: list[str] = [sys.executable, "-m", "consul_leader"]
# The tiny main task (and the sidecar stand-in of the model's own tests).
STUB_COMMAND: list[str] = [sys.executable, str(Path(__file__).with_name("stub.py"))]

SIDECAR_TASK = "leader"
MAIN_TASK = "db"
PORT_LABEL = "db"


def leader_job(
    *,
    job_id: str = "db",
    service: str = "db",
    count: int = 3,
    sidecar_env: Mapping[str, str] | None = None,
    sidecar_command: Sequence[str] | None = None,
    main_env: Mapping[str, str] | None = None,
    main_command: Sequence[str] | None = None,
    tags: Sequence[str] = ("v1",),
    canary_tags: Sequence[str] = (),
    enable_tag_override: bool = True,
    check_interval: float = 10.0,
    checks: bool = True,
    kill_timeout: float = 5.0,
    sidecar_kill_timeout: float = 5.0,
    restart: RestartPolicy | None = None,
    token_file: bool = False,
    extra_ports: Sequence[str] = (),
) -> Job:
    """The standard job. `sidecar_env` is the sidecar task's `env` block (interpolated:
    ${NOMAD_...}, ${meta.consul_http_addr}); CONSUL_HTTP_ADDR defaults to the node's
    agent. `token_file` adds CONSUL_HTTP_TOKEN_FILE=${NOMAD_SECRETS_DIR}/consul_token
    (use it with ACLs on). `sidecar_command` defaults to SIDECAR_COMMAND as it is now.
    `extra_ports` adds group port labels, e.g. "leader" for
    CONSUL_LEADER_LISTEN=127.0.0.1:${NOMAD_PORT_leader}."""
    env = {"CONSUL_HTTP_ADDR": "${meta.consul_http_addr}"}
    if token_file:
        env["CONSUL_HTTP_TOKEN_FILE"] = "${NOMAD_SECRETS_DIR}/consul_token"
    env.update(sidecar_env or {})
    sidecar = Task(
        name=SIDECAR_TASK,
        command=tuple(sidecar_command if sidecar_command is not None else SIDECAR_COMMAND),
        env=env, lifecycle=Lifecycle("prestart", sidecar=True),
        kill_timeout=sidecar_kill_timeout, consul_identity=True,
    )
    main_service = Service(
        name=service, port_label=PORT_LABEL, tags=tuple(tags), canary_tags=tuple(canary_tags),
        enable_tag_override=enable_tag_override,
        checks=(Check("alive", interval=check_interval, timeout=2.0),) if checks else (),
    )
    main = Task(
        name=MAIN_TASK,
        command=tuple(main_command if main_command is not None else STUB_COMMAND),
        env=dict(main_env or {}), services=(main_service,), kill_timeout=kill_timeout,
    )
    group = TaskGroup(name=service, tasks=(sidecar, main), count=count,
                      ports=(PORT_LABEL, *extra_ports),
                      restart=restart or RestartPolicy())
    return Job(id=job_id, groups=(group,))
