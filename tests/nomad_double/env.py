"""A task's environment and directories, as Nomad builds them.

nomad: client/taskenv/env.go (Builder.buildEnv: Nomad's variables, then the task's `env`
block interpolated, then the hooks' variables, which win), client/allocdir (the layout:
`<data>/alloc/<alloc>/alloc`, `<data>/alloc/<alloc>/<task>/local` and `/secrets`),
client/allocrunner/taskrunner/consul_hook.go (the task's Consul token:
`secrets/consul_token`, CONSUL_TOKEN and CONSUL_HTTP_TOKEN).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONSUL_TOKEN_FILE = "consul_token"  # nomad: taskrunner/consul_hook.go (consulTokenFilename)
CONSUL_TOKEN_FILE_MODE = 0o640  # nomad: taskrunner/consul_hook.go (consulTokenFilePerms)
_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class AllocInfo:
    alloc_id: str
    job_id: str
    group: str
    index: int
    namespace: str
    datacenter: str
    region: str

    @property
    def name(self) -> str:
        return f"{self.job_id}.{self.group}[{self.index}]"


@dataclass(frozen=True)
class TaskDirs:
    alloc_root: Path
    task: str

    @property
    def shared(self) -> Path:  # NOMAD_ALLOC_DIR
        return self.alloc_root / "alloc"

    @property
    def local(self) -> Path:  # NOMAD_TASK_DIR
        return self.alloc_root / self.task / "local"

    @property
    def secrets(self) -> Path:  # NOMAD_SECRETS_DIR
        return self.alloc_root / self.task / "secrets"

    @property
    def stdout(self) -> Path:
        return self.shared / "logs" / f"{self.task}.stdout.0"

    @property
    def stderr(self) -> Path:
        return self.shared / "logs" / f"{self.task}.stderr.0"

    def create(self) -> None:
        for directory in (self.shared / "logs", self.shared / "tmp", self.shared / "data",
                          self.local, self.secrets):
            directory.mkdir(parents=True, exist_ok=True)

    def write_consul_token(self, token: str) -> Path:
        path = self.secrets / CONSUL_TOKEN_FILE
        path.write_text(token, encoding="utf-8")
        path.chmod(CONSUL_TOKEN_FILE_MODE)
        return path


def nomad_variables(alloc: AllocInfo, task: str, dirs: TaskDirs, host_address: str,
                    ports: Mapping[str, int]) -> dict[str, str]:
    """nomad: taskenv/env.go (buildEnv, addPorts): what every task gets."""
    env = {
        "NOMAD_ALLOC_DIR": str(dirs.shared),
        "NOMAD_TASK_DIR": str(dirs.local),
        "NOMAD_SECRETS_DIR": str(dirs.secrets),
        "NOMAD_ALLOC_ID": alloc.alloc_id,
        "NOMAD_SHORT_ALLOC_ID": alloc.alloc_id[:8],
        "NOMAD_ALLOC_NAME": alloc.name,
        "NOMAD_ALLOC_INDEX": str(alloc.index),
        "NOMAD_GROUP_NAME": alloc.group,
        "NOMAD_TASK_NAME": task,
        "NOMAD_JOB_ID": alloc.job_id,
        "NOMAD_JOB_NAME": alloc.job_id,
        "NOMAD_DC": alloc.datacenter,
        "NOMAD_NAMESPACE": alloc.namespace,
        "NOMAD_REGION": alloc.region,
    }
    for label, port in ports.items():
        address = f"{host_address}:{port}"
        env.update({
            f"NOMAD_ADDR_{label}": address, f"NOMAD_HOST_ADDR_{label}": address,
            f"NOMAD_IP_{label}": host_address, f"NOMAD_HOST_IP_{label}": host_address,
            f"NOMAD_PORT_{label}": str(port), f"NOMAD_ALLOC_PORT_{label}": str(port),
            f"NOMAD_HOST_PORT_{label}": str(port),
        })
    return env


def task_environment(nomad: Mapping[str, str], task_env: Mapping[str, str],
                     hook_env: Mapping[str, str], host_env: Mapping[str, str],
                     node_attributes: Mapping[str, str]) -> dict[str, str]:
    """nomad: taskenv/env.go (buildEnv): Nomad's variables, host variables not already
    set, the task's `env` block (interpolated), then the hooks' variables."""
    env = dict(nomad)
    for key, value in host_env.items():
        env.setdefault(key, value)
    for key, value in task_env.items():
        env[key] = interpolate(value, env, node_attributes)
    env.update(hook_env)
    return env


def interpolate(text: str, env: Mapping[str, str], node_attributes: Mapping[str, str]) -> str:
    """`${NOMAD_...}` from the environment, `${node.*}`, `${attr.*}`, `${meta.*}` from the
    node; anything unknown stays as written, as Nomad leaves it (helper/args.ReplaceEnv)."""
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in env:
            return env[key]
        return node_attributes.get(key, match.group(0))

    return _INTERPOLATION.sub(replace, text)
