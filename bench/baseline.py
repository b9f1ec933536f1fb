"""The original shell sidecar's polling loop, request for request: the benchmarks' baseline.

What `consul.sh` (trailmix/consul-leader, read for facts only, never copied) does, as it runs
at `CONSUL_LEADER_LOG_LEVEL=debug`, the one level at which it gets past its first log line
(DESIGN §0):

    start   check the key           GET  /v1/kv/<key>            (its create branch never runs)
            create a session        PUT  /v1/session/create      then Meta.session on the service
            try to acquire          PUT  /v1/kv/<key>?acquire=<session>   primary label if true
    loop    renew                   PUT  /v1/session/renew/<id>  (404: create a session again)
            read the holder         GET  /v1/kv/<key>?consistent
            holder is us            add the primary label, remove the replica label
            otherwise               remove the primary label, add the replica label
            no holder               check the key, try to acquire
            sleep SLEEP seconds     (after the work, so the period is SLEEP plus the work)

Each label change first reads the service (`GET /v1/agent/services?filter=ID matches
"_nomad-task-<alloc>-.*"`) and re-registers it only when the label actually changes (the
script compares the JSON before and after its jq edit; `unique` also sorts the tags).

Faithful on purpose, because the script does the same:
* no SIGTERM handler: the default action ends the process, so the key is never released and
  the session never destroyed (the next leader waits for Consul to expire it);
* no step-down, no health checks, no ACL token, no TLS;
* an answer jq cannot parse (for example `500 No cluster leader`) ends the process under
  `set -e`, with jq 1.6's status 4; three failed service look-ups (5 s apart) end it with 1.

Deliberate differences, for the benchmark's safety only: every request has a 30 s timeout
(curl has none), and the process exits after `BENCH_BASELINE_LIFETIME` seconds (default 1800)
so an orphan cannot outlive a run. Run it with the sidecar's environment variables:
`python -m bench.baseline`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

JQ_PARSE_ERROR = 4  # jq 1.6 exit status for input it cannot parse
JQ_TYPE_ERROR = 5  # jq exit status for e.g. indexing an object with a number
SCRIPT_FAILURE = 1  # the script's own `exit 1`
LOOKUP_RETRIES = 3
LOOKUP_RETRY_PAUSE = 5.0  # the script's `sleep 5` between failed service look-ups
SESSION_RETRY_PAUSE = 5.0  # and before its one retry of a failed session create
REQUEST_TIMEOUT = 30.0
SESSION_ID_LENGTH = 36


class ShellExit(Exception):
    """The script would end here, with `status`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"exit {status}: {reason}")
        self.status = status


@dataclass(frozen=True)
class Answer:
    """What curl hands the script: the status code (0 when nothing answered) and the body."""

    status: int
    text: str


@dataclass(frozen=True)
class Call:
    """One request the loop made, for tests and logs."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    status: int


@dataclass(frozen=True)
class ShellSettings:
    """The script's knobs, with its defaults."""

    address: str
    service_name: str
    key: str
    primary_label: str
    replica_label: str
    ttl: str
    sleep: float
    lock_delay: str
    alloc_id: str
    alloc_dir: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ShellSettings:
        def knob(name: str, default: str) -> str:
            return environ.get(name) or default  # `${VAR:=default}`: empty counts as unset

        service = knob("CONSUL_LEADER_SERVICE_NAME", "consul-leader")
        key_default = (
            f"/{service}/lock" if service == "consul-leader" else f"/consul-leader/{service}/lock"
        )
        return cls(
            address=knob("CONSUL_HTTP_ADDR", "http://localhost:8500"),
            service_name=service,
            key=knob("CONSUL_LEADER_KEY", key_default),
            primary_label=knob("CONSUL_LEADER_PRIMARY_LABEL", "primary"),
            replica_label=environ.get("CONSUL_LEADER_REPLICA_LABEL", ""),
            ttl=knob("CONSUL_LEADER_TTL", "15s"),
            sleep=float(knob("CONSUL_LEADER_SLEEP", "10")),
            lock_delay=knob("CONSUL_LEADER_LOCKDELAY", "0s"),
            alloc_id=environ.get("NOMAD_ALLOC_ID", ""),
            alloc_dir=environ.get("NOMAD_ALLOC_DIR", ""),
        )


def jq_input(text: str) -> Any | None:
    """jq's view of a body: None when empty (jq prints nothing), else the parsed JSON."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ShellExit(JQ_PARSE_ERROR, f"jq cannot parse {text[:60]!r}") from None


def jq_unique(tags: list[str]) -> list[str]:
    """jq's `unique`: distinct and sorted."""
    return sorted(set(tags))


class ShellLoop:
    """The script's state (its session ID) and its functions, one method each."""

    def __init__(
        self,
        settings: ShellSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[Call], None] = lambda call: None,
    ) -> None:
        self.settings = settings
        self.session = ""  # CONSUL_LEADER_SESSION_ID
        self._sleep = sleep
        self._on_call = on_call
        self._service_pattern = re.compile(f"_nomad-task-{settings.alloc_id}-*")

    # -- the script's top level -----------------------------------------------------------

    def run(self, iterations: int | None = None) -> None:
        """Start, then loop (for ever unless `iterations` is given)."""
        self.boot()
        done = 0
        while iterations is None or done < iterations:
            self.iteration()
            done += 1
            self._sleep(self.settings.sleep)

    def boot(self) -> None:
        self.create_key()
        self.create_session()
        self.acquire_key()

    def iteration(self) -> None:
        settings = self.settings
        self.renew_session()
        owner = self.lock_owner()
        if owner == self.session:
            self.add_tag(settings.primary_label)
            if settings.replica_label:
                self.remove_tag(settings.replica_label)
        else:
            self.remove_tag(settings.primary_label)
            if settings.replica_label:
                self.add_tag(settings.replica_label)
        if owner == "":
            # `create_key && acquire_key`: create_key's status is its last `if`'s, always 0.
            self.create_key()
            self.acquire_key()

    # -- the key --------------------------------------------------------------------------

    def create_key(self) -> None:
        """check_key, then nothing: check_key's status is that of its last `case` (0 whatever
        the answer), so the script's `[ $exists = 1 ]` never holds and the PUT never runs.
        The acquire creates the key anyway."""
        self._request("GET", self._kv_path())

    def acquire_key(self) -> None:
        if not self.session:
            return
        answer = self._request("PUT", self._kv_path(), params={"acquire": self.session})
        if answer.text.rstrip("\n") == "true":
            self.add_tag(self.settings.primary_label)

    def lock_owner(self) -> str:
        """`.[0].Session//empty` of a `?consistent` read; "" when missing or free."""
        entries = jq_input(self._request("GET", self._kv_path(), params={"consistent": ""}).text)
        if entries is None:
            return ""
        if not isinstance(entries, list):
            raise ShellExit(JQ_TYPE_ERROR, "jq cannot index the KV answer with a number")
        first = entries[0] if entries else None
        session = first.get("Session") if isinstance(first, dict) else None
        return session if isinstance(session, str) else ""

    # -- the session ----------------------------------------------------------------------

    def create_session(self, retried: bool = False) -> None:
        settings = self.settings
        body = (
            f'{{ "Name": "Consul-Leader API Lock: {settings.service_name}", '
            f'"TTL": "{settings.ttl}", "LockDelay": "{settings.lock_delay}" }}'
        )
        created = jq_input(self._request("PUT", "/v1/session/create", data=body).text)
        session = created.get("ID") if isinstance(created, dict) else None
        self.session = session if isinstance(session, str) else ""
        if len(self.session) == SESSION_ID_LENGTH:
            self.add_metadata()
            return
        if retried:
            raise ShellExit(SCRIPT_FAILURE, "could not create a session")
        self._sleep(SESSION_RETRY_PAUSE)
        self.create_session(retried=True)

    def renew_session(self) -> None:
        if not self.session:
            self.create_session()
        answer = self._request("PUT", f"/v1/session/renew/{self.session}")
        if answer.status == 404:
            self.create_session()

    # -- the service ----------------------------------------------------------------------

    def get_service(self) -> dict[str, Any]:
        """The first of the allocation's services, as /v1/agent/services shows it."""
        for _ in range(LOOKUP_RETRIES):
            answer = self._request(
                "GET",
                "/v1/agent/services",
                params={"filter": f'ID matches "_nomad-task-{self.settings.alloc_id}-.*"'},
            )
            services = jq_input(answer.text)
            if services is not None and not isinstance(services, dict):
                raise ShellExit(JQ_TYPE_ERROR, "jq cannot run to_entries on the services answer")
            found = [
                value for key, value in (services or {}).items()
                if self._service_pattern.search(key)
            ]
            if found and found[0] is not None:
                return dict(found[0])
            self._sleep(LOOKUP_RETRY_PAUSE)
        raise ShellExit(SCRIPT_FAILURE, f"no service for alloc {self.settings.alloc_id}")

    def add_tag(self, label: str) -> None:
        service = self.get_service()
        changed = {**service, "Tags": jq_unique([*(service.get("Tags") or []), label])}
        registered = changed != service and self._register(changed).status == 200
        if registered and label == self.settings.primary_label:
            self._touch_leader_file()

    def remove_tag(self, label: str) -> None:
        service = self.get_service()
        changed = {**service, "Tags": [tag for tag in service.get("Tags") or [] if tag != label]}
        if changed != service:
            self._register(changed)

    def add_metadata(self) -> None:
        service = self.get_service()
        changed = {**service, "Meta": {**(service.get("Meta") or {}), "session": self.session}}
        if changed != service:
            self._register(changed)

    def _register(self, service: dict[str, Any]) -> Answer:
        body = {name: value for name, value in service.items()
                if name not in ("Service", "Datacenter")}
        body["Name"] = service.get("Service")  # jq: .["Name"] = .Service, appended last
        return self._request(
            "PUT", "/v1/agent/service/register", data=json.dumps(body, separators=(",", ":"))
        )

    def _touch_leader_file(self) -> None:
        try:
            Path(self.settings.alloc_dir, self.settings.alloc_id).touch()
        except OSError as exc:
            raise ShellExit(SCRIPT_FAILURE, f"touch failed: {exc}") from None

    # -- curl -----------------------------------------------------------------------------

    def _kv_path(self) -> str:
        return f"/v1/kv{self.settings.key}"

    def _request(
        self, method: str, path: str, params: dict[str, str] | None = None, data: str | None = None
    ) -> Answer:
        """`curl -s`: a new connection each time; nothing answered is status 0 and no body."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
        try:
            reply = requests.request(
                method, self.settings.address + path, params=params, data=data,
                headers=headers, timeout=REQUEST_TIMEOUT,
            )
            answer = Answer(reply.status_code, reply.text)
        except requests.RequestException:
            answer = Answer(0, "")
        self._on_call(Call(method, path, tuple(sorted((params or {}).items())), answer.status))
        return answer


def main(environ: Mapping[str, str] = os.environ) -> int:
    settings = ShellSettings.from_env(environ)
    lifetime = float(environ.get("BENCH_BASELINE_LIFETIME", "1800"))
    stop_at = time.monotonic() + lifetime

    def bounded_sleep(seconds: float) -> None:
        if time.monotonic() + seconds > stop_at:
            raise ShellExit(0, "benchmark lifetime over")
        time.sleep(seconds)

    loop = ShellLoop(settings, sleep=bounded_sleep)
    try:
        loop.run()
    except ShellExit as exc:
        print(f"shell loop: {exc}", file=sys.stderr, flush=True)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
