"""Shared pieces of the ACL, TLS, token, Prometheus and metrics-lint end-to-end tests.

* Consul's view without a token: `ConsulView` reads the stand-in's in-process snapshot, so
  ACLs (default deny) and TLS never stand between a test and what Consul holds.
* The shipped ACL policies as data: `shipped_policy_rules` parses a policy file of
  `deploy/consul/` with the stand-in's own rule parser and `render_rules` writes any subset of
  it back as HCL, so a test policy is derived from the shipped file mechanically, never
  retyped.
* Sidecars outside a Nomad group (`start_sidecar`, `stopped_at_exit`) for setups where the
  Nomad model's registration client cannot talk to the agent (TLS).
* Secrets: `SecretVault` hands out distinctive random tokens; `scanned_for_tokens` scans every
  log file a scenario produced for all of them when it ends.
* ACLs on: `running_acl_cluster` (default deny, a management token) and `AclCluster`, whose
  groups are Nomad allocations with workload-identity tokens (every token Nomad makes is
  known to the vault, so the scan covers it).
* Role endpoints: `RoleEndpointProbe` samples /status, /primary and /replica of live sidecars
  and records every disagreement; any end-to-end test can run it in the background.

Guarantees: every helper is bounded in time (deadlines on every wait, timeouts on every
request); nothing here edits the product, the stand-in or the shared harness.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.consul_double import ConsulDouble
from tests.consul_double.acl import AclSystem, Policy, parse_rules
from tests.harness import (
    REPO,
    ConsulView,
    Group,
    NomadGroup,
    NomadSidecar,
    Sidecar,
    free_port,
    wait_for,
)
from tests.integration.conftest import SLEEP as E2E_SLEEP
from tests.integration.conftest import TTL as E2E_TTL
from tests.nomad_double import AclSettings
from tests.nomad_double.jobs import SIDECAR_TASK

T = TypeVar("T")

POLICY_PATH = REPO / "deploy" / "consul" / "consul-leader-policy.hcl"
POLICY_SERVICE = "postgres"  # the service the shipped policy is written for
LEASE_SERVICE = "consul-leader"  # the sidecar's own service (adapters/checks.py)

# The end-to-end timings of conftest.py, as sidecar settings.
TTL = f"{E2E_TTL:g}s"
SLEEP = f"{E2E_SLEEP:g}"


def wait_found(find: Callable[[], T | None], timeout: float, what: str) -> T:
    """`wait_for` for a lookup: polls until `find` returns something, and returns that."""
    found = wait_for(find, timeout, what)
    assert found is not None
    return found


def require_binary(name: str) -> str:
    """The path of a CLI the tests need; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found on PATH: install it (Debian/Ubuntu: apt-get "
                             "install prometheus) - CI installs it, so these checks must run")
    return path


# --------------------------------------------------------------------------- ACL policy


@dataclass(frozen=True)
class PolicyRule:
    """One rule of a policy: `key_prefix "consul-leader/postgres/" { policy = "write" }`."""

    resource: str
    name: str
    level: str
    prefix: bool

    @property
    def kind(self) -> str:
        return f"{self.resource}_prefix" if self.prefix else self.resource

    @property
    def label(self) -> str:
        """A short, stable name for test IDs and messages."""
        return f'{self.kind} "{self.name}" {self.level}'

    def hcl(self) -> str:
        if self.resource == "operator":
            return f'operator = "{self.level}"'
        return f'{self.kind} "{self.name}" {{\n  policy = "{self.level}"\n}}'

    def covers(self, denied_name: str) -> bool:
        """Whether a denial on `denied_name` falls under this rule's target."""
        return denied_name.startswith(self.name) if self.prefix else denied_name == self.name

    def denial_pattern(self) -> re.Pattern[str]:
        """Consul's words for a permission this rule would grant (acl/errors.go):
        `lacks permission 'key:write' on "consul-leader/postgres/lock"`, quotes escaped or not.

        Group 1 is the access asked for, group 2 the resource name. A 403 body quoted in a log
        line matches, and so does a message of the sidecar's own in the same words ("may lack
        permission ..."), for what Consul filters silently instead of refusing.
        """
        return re.compile(
            rf"lacks? permission '{re.escape(self.resource)}:(read|list|write)' "
            r'on \\?"([^"\\]*)\\?"'
        )


def policy_rules(policy: Policy) -> list[PolicyRule]:
    """Every rule of a compiled policy, in a stable order."""
    rules = [
        PolicyRule(resource, name, level, prefix=False)
        for (resource, name), level in policy.exact.items()
    ]
    rules += [
        PolicyRule(resource, prefix, level, prefix=True)
        for resource, prefixes in policy.prefixes.items()
        for prefix, level in prefixes
    ]
    if policy.operator is not None:
        rules.append(PolicyRule("operator", "", policy.operator, prefix=False))
    return sorted(rules, key=lambda rule: (rule.resource, rule.prefix, rule.name))


def shipped_policy_rules(path: Path = POLICY_PATH) -> list[PolicyRule]:
    """The rules of the shipped policy, read with the stand-in's parser."""
    return policy_rules(parse_rules(path.read_text()))


def render_rules(rules: Iterable[PolicyRule]) -> str:
    """HCL text for `rules`; `parse_rules(render_rules(policy_rules(p))) == p`."""
    return "\n\n".join(rule.hcl() for rule in rules) + "\n"


def without(rules: Iterable[PolicyRule], removed: PolicyRule) -> list[PolicyRule]:
    return [rule for rule in rules if rule != removed]


# --------------------------------------------------------------------------- logs


def log_lines(text: str, level: str | None = None) -> list[str]:
    """The logfmt lines of a sidecar log, optionally only those of one level."""
    lines = [line for line in text.splitlines() if line.startswith("time=")]
    if level is None:
        return lines
    return [line for line in lines if f" level={level} " in line]


def denial_lines(text: str, rule: PolicyRule, level: str | None = None) -> list[str]:
    """Lines naming a permission `rule` grants, on a name it covers, in Consul's words."""
    pattern = rule.denial_pattern()
    return [
        line
        for line in log_lines(text, level)
        if (match := pattern.search(line)) and rule.covers(match.group(2))
    ]


# --------------------------------------------------------------------------- sidecars


def sidecar_env(agent: str, status_port: int, **overrides: str) -> dict[str, str]:
    """The environment of a sidecar without Nomad: no allocation, so no target services."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CONSUL_HTTP_ADDR": agent,
        "CONSUL_LEADER_SERVICE_NAME": "db",
        "CONSUL_LEADER_TTL": TTL,
        "CONSUL_LEADER_SLEEP": SLEEP,
        "CONSUL_LEADER_LOCKDELAY": "0s",
        "CONSUL_LEADER_LOG_LEVEL": "debug",
        "CONSUL_LEADER_LISTEN": f"127.0.0.1:{status_port}",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def start_sidecar(workdir: Path, name: str, agent: str, node: str = "n1",
                  **env: str) -> Sidecar:
    """Start `python -m consul_leader` against `agent`; its log is `<workdir>/<name>.log`."""
    port = free_port()
    sidecar = Sidecar(
        name=name,
        node=node,
        agent=agent,
        alloc_id="",
        service_id="",
        status_port=port,
        env=sidecar_env(agent, port, **env),
        log_path=workdir / f"{name}.log",
    )
    sidecar.start()
    return sidecar


def stop_all(sidecars: Iterable[Sidecar], timeout: float = 8.0) -> None:
    """SIGTERM every running sidecar, wait for each, SIGKILL what does not exit in time."""
    started = [s for s in sidecars if s.process is not None]
    for sidecar in started:
        if sidecar.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(sidecar.pid, signal.SIGCONT)
                sidecar.send(signal.SIGTERM)
    for sidecar in started:
        assert sidecar.process is not None
        try:
            sidecar.wait(timeout)
        except subprocess.TimeoutExpired:
            sidecar.process.kill()
            sidecar.process.wait()


@contextlib.contextmanager
def stopped_at_exit(sidecars: list[Sidecar]) -> Iterator[list[Sidecar]]:
    """Stop every sidecar in the (growing) list when the block ends, however it ends."""
    try:
        yield sidecars
    finally:
        stop_all(sidecars)


def state_of(sidecar: Sidecar) -> str | None:
    """The sidecar's state by /status, or None when it does not answer."""
    with contextlib.suppress(requests.RequestException, ValueError, KeyError):
        return str(sidecar.status(timeout=1.0)["state"])
    return None


def transitions_to(sidecar: Sidecar, state: str) -> float:
    """Sum of `consul_leader_transitions_total{to=<state>}` now: 0 means never entered."""
    text = requests.get(f"http://127.0.0.1:{sidecar.status_port}/metrics", timeout=2).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("consul_leader_transitions_total{") and f'to="{state}"' in line
    )


# --------------------------------------------------------------------------- secrets


class SecretVault:
    """Distinctive random token secrets, and a scanner that finds them in text."""

    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}

    def new(self, label: str) -> str:
        # 128 random bits: a match in a log cannot be a coincidence.
        secret = f"{label}-{secrets.token_hex(16)}"
        self._secrets[secret] = label
        return secret

    def remember(self, secret: str, label: str) -> None:
        """A secret made elsewhere (Nomad's workload-identity tokens: UUIDs, whose last
        group, 48 random bits, is the half scanned for)."""
        self._secrets[secret] = label

    def leaks(self, text: str) -> list[str]:
        """Labels of the secrets found in `text`, whole or as their random half."""
        found = []
        for secret, label in self._secrets.items():
            random_half = secret.rsplit("-", 1)[1]
            if secret in text or random_half in text:
                found.append(label)
        return found

    def assert_absent(self, sources: Mapping[str, str]) -> None:
        leaks = {name: labels for name, text in sources.items() if (labels := self.leaks(text))}
        assert not leaks, f"token secrets found (source -> token labels): {leaks}"


def logs_under(folder: Path) -> dict[str, str]:
    """Every log file under `folder`, by relative path: `*.log`, and the task logs Nomad
    writes (`alloc/logs/<task>.stdout.0`, `.stderr.0`)."""
    paths = {*folder.rglob("*.log"), *folder.rglob("logs/*.stdout.*"),
             *folder.rglob("logs/*.stderr.*")}
    return {str(path.relative_to(folder)): path.read_text(errors="replace")
            for path in sorted(paths)}


@contextlib.contextmanager
def scanned_for_tokens(folder: Path) -> Iterator[SecretVault]:
    """Token secrets for one scenario; when it ends, every `*.log` under `folder` is scanned.

    Fails when a secret appears, and also when there is no sidecar log at all (a scan of
    nothing proves nothing). Wrap it in a fixture of the test module:

        @pytest.fixture
        def vault(tmp_path): with scanned_for_tokens(tmp_path) as secrets: yield secrets
    """
    secret_vault = SecretVault()
    yield secret_vault
    logs = logs_under(folder)
    assert logs and any(logs.values()), f"no sidecar log under {folder} to scan for tokens"
    secret_vault.assert_absent(logs)


# --------------------------------------------------------------------------- ACL cluster


@dataclass
class AclCluster:
    """The stand-in with ACLs on (default deny), its management token, and token helpers."""

    consul: Any  # tests.consul_double.ConsulDouble
    management: str
    vault: SecretVault
    workdir: Path
    _groups: int = 0

    def token(self, label: str, rules: list[PolicyRule]) -> str:
        """A new token with exactly `rules`; its secret is registered in the vault."""
        secret = self.vault.new(label)
        self.consul.add_acl_token(secret, render_rules(rules))
        return secret

    def group(self, rules: list[PolicyRule], **settings: Any) -> NomadGroup:
        """Sidecars of `postgres` as allocations of the Nomad model: the Nomad agent uses
        the management token, each service is registered with a service-identity token, and
        each sidecar task gets a workload-identity token with exactly `rules`, read from
        secrets/consul_token (CONSUL_HTTP_TOKEN_FILE), as the shipped job does."""
        acl = VaultedAcl(self.consul.control_addr, self.management, render_rules(rules),
                         vault=self.vault)
        self._groups += 1
        return NomadGroup(self.consul, self.workdir / f"group-{self._groups}",
                          service=POLICY_SERVICE, ttl=TTL, sleep=SLEEP, acl=acl, **settings)

    def consul_only_group(self, **settings: Any) -> Group:
        """Sidecars of `postgres` on Consul alone. Registration (Group.add) uses the
        management token; give each sidecar its token with `add(node, env=...)`."""
        return Group(self.consul, self.workdir, service=POLICY_SERVICE, ttl=TTL, sleep=SLEEP,
                     extra_env={"CONSUL_HTTP_TOKEN": self.management}, **settings)

    @staticmethod
    def task_token(sidecar: Sidecar) -> str:
        """The workload-identity token Nomad gave the sidecar's task."""
        assert isinstance(sidecar, NomadSidecar) and sidecar.allocation is not None
        token = sidecar.allocation.task_token(SIDECAR_TASK)
        assert token is not None, f"{sidecar.name}: its task has no Consul token"
        return token

    def labelled(self, group: Group, label: str) -> list[Sidecar]:
        """The sidecars with an instance of the group's service tagged `label`."""
        view = self.view()
        tagged = set(view.tagged(group.service, label))
        return [s for s in group.sidecars
                if tagged & set(view.owned(group.service, s.owns))]

    def view(self) -> ConsulView:
        return ConsulView.of(self.consul)

    def primary(self, group: Group) -> Sidecar | None:
        """The group's sidecar Consul lists as the one passing primary, if exactly one."""
        view = self.view()
        primaries = view.passing_primaries(group.service, group.primary_label)
        if len(primaries) != 1:
            return None
        return group.owner(view.services(group.service)[primaries[0]])


@dataclass(frozen=True)
class VaultedAcl(AclSettings):
    """Nomad's ACL settings whose every new token (service and workload identities) is
    remembered by the vault, so the end-of-scenario scan looks for it too."""

    vault: SecretVault = field(default_factory=SecretVault)

    def new_token(self, rules: str) -> str:
        secret = super().new_token(rules)
        self.vault.remember(secret, "nomad-identity")
        return secret


@contextlib.contextmanager
def running_acl_cluster(vault: SecretVault, workdir: Path) -> Iterator[AclCluster]:
    """Two nodes with ACLs on and default deny, plus a management token from `vault`."""
    management = vault.new("management")
    acl = AclSystem(default_policy="deny", management_tokens=[management])
    with ConsulDouble(nodes=("n1", "n2"), session_ttl_min=1.0, rpc_hold_timeout=0.5,
                      acl=acl) as consul:
        yield AclCluster(consul, management, vault, workdir)


# --------------------------------------------------------------------------- role endpoints


@dataclass(frozen=True)
class RoleSample:
    """/primary and /replica of one sidecar, taken while /status showed one unchanged state."""

    sidecar: str
    state: str
    primary: int
    replica: int
    lease_left: float | None  # lower bound of the lease left when /primary was asked
    published: bool = True  # the Leader's label is on its service(s) in Consul


@dataclass
class RoleEndpointProbe:
    """Checks that /primary is 200 only on a Leader and /replica only on a Follower.

    Each sample asks /status, /primary, /replica, /status of one sidecar. It counts only when
    both /status answers show the same state since the same instant, so a transition between
    the calls is skipped rather than misread. The rules checked on a sample:

    * /primary 200 only in state Leader; a Leader whose lease had at least `lease_margin`
      seconds left while /primary was asked must answer 200 (a Leader past its lease must not);
    * /replica 200 exactly in state Follower.

    Use as a context manager to sample every `period` seconds in the background, and call
    `expect(sidecar, state)` at the moments a test knows the state; then `assert_consistent()`.
    """

    sidecars: Callable[[], Iterable[Sidecar]]
    period: float = 0.25
    lease_margin: float = 0.2
    samples: list[RoleSample] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RoleEndpointProbe:
        self._thread = threading.Thread(target=self._run, name="role-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_all()
            self._stop.wait(self.period)

    def sample_all(self) -> None:
        for sidecar in list(self.sidecars()):
            if sidecar.running():
                self.sample(sidecar)

    def sample(self, sidecar: Sidecar) -> RoleSample | None:
        """One sample of `sidecar`; None when it changed state meanwhile or did not answer."""
        try:
            asked = time.monotonic()
            before = sidecar.status(timeout=1.0)
            primary = sidecar.endpoint("/primary", timeout=1.0)
            replica = sidecar.endpoint("/replica", timeout=1.0)
            after = sidecar.status(timeout=1.0)
            elapsed = time.monotonic() - asked
        except (requests.RequestException, ValueError):
            return None  # stopped, paused or exiting: nothing to compare
        if (before["state"], before["since"], before.get("published")) != (
            after["state"], after["since"], after.get("published")
        ):
            return None
        lease = before.get("lease_remaining")
        sample = RoleSample(sidecar.name, before["state"], primary, replica,
                            None if lease is None else lease - elapsed,
                            bool(before.get("published", True)))
        self.samples.append(sample)
        self.violations.extend(role_violations(sample, self.lease_margin))
        return sample

    def expect(self, sidecar: Sidecar, state: str, timeout: float = 3.0) -> RoleSample:
        """Sample `sidecar` until a conclusive sample shows `state`; fail at the deadline."""

        def sampled() -> RoleSample | None:
            sample = self.sample(sidecar)
            return sample if sample is not None and sample.state == state else None

        return wait_found(sampled, timeout, f"a role-endpoint sample of {sidecar.name} in {state}")

    def states_seen(self) -> set[str]:
        return {sample.state for sample in self.samples}

    def assert_consistent(self) -> None:
        """No disagreement seen, and at least one conclusive sample (else nothing was checked)."""
        assert not self.violations, f"role endpoints disagree with /status: {self.violations[:5]}"
        assert self.samples, "no conclusive role-endpoint sample: nothing was checked"


def role_violations(sample: RoleSample, lease_margin: float) -> list[str]:
    """What is wrong with one sample, as readable sentences."""
    problems = []
    leading = sample.state == "Leader"
    if sample.primary == 200 and not leading:
        problems.append(f"{sample.sidecar}: /primary 200 in state {sample.state}")
    confident = sample.lease_left is not None and sample.lease_left >= lease_margin
    if leading and confident and sample.published and sample.primary != 200:
        problems.append(f"{sample.sidecar}: /primary {sample.primary} while Leader with "
                        f"{sample.lease_left:.2f}s of lease left")
    if (sample.replica == 200) != (sample.state == "Follower"):
        problems.append(f"{sample.sidecar}: /replica {sample.replica} in state {sample.state}")
    return problems


@contextlib.contextmanager
def role_endpoints_checked(
    sidecars: Callable[[], Iterable[Sidecar]],
) -> Iterator[RoleEndpointProbe]:
    """Run a `RoleEndpointProbe` for the block and assert it found nothing wrong."""
    with RoleEndpointProbe(sidecars) as probe:
        yield probe
    probe.sample_all()  # one more round as the block ends, while its sidecars still run
    probe.assert_consistent()
