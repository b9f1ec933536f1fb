"""The original shell sidecar's requests, made with `curl` and `jq` as it made them.

The seed project (/work/shared/seed/README.txt, trailmix/consul-leader `consul.sh`) finds
its service with `GET /v1/agent/services?filter=ID matches "_nomad-task-<alloc>-.*"`,
creates the lock key with a bare PUT, creates a TTL session, acquires with `?acquire`,
reads the holder with `?consistent`, renews, and re-tags its service by reshaping the
agent's JSON with jq (`.Name = .Service`, drop `Service` and `Datacenter`) into a
registration body. Each step here is one of those commands, so the stand-in must accept
exactly what that script sends. Tests marked `real_consul` also pass against a real agent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conformance.conftest import ConsulTarget

real_consul = pytest.mark.real_consul

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq")), reason="needs curl and jq"
)

# jq programs of consul.sh, verbatim but for the label and alloc placeholders ($value, $alloc).
PICK_SERVICE = ('to_entries | map(select(.key | test("_nomad-task-" + $alloc + "-*")))'
                ' | map(.value)[0] // empty')
ADD_TAG = '.Tags = (.Tags + [$value] | unique)'
REMOVE_TAG = 'del(.Tags[] | select(. == $value))'
ADD_SESSION_META = '.Meta = (.Meta + {"session": $value})'
TO_REGISTRATION = '.["Name"] = .Service | del(.Service, .Datacenter)'


def shell(consul: ConsulTarget, script: str, **env: str) -> str:
    """Run `script` in bash with ADDR (the agent) and `env`; its stdout, stripped."""
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"PATH": "/usr/bin:/bin", "ADDR": consul.addr, **env},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


@pytest.fixture
def alloc(consul: ConsulTarget) -> Iterator[str]:
    """A Nomad-style alloc ID whose task service is registered on the agent."""
    alloc_id = consul.unique("alloc")
    service_id = f"_nomad-task-{alloc_id}-db-postgres-db"
    consul.register_service({
        "ID": service_id, "Name": consul.unique("postgres"), "Tags": ["v1"], "Port": 5432,
        "Address": "10.0.0.5", "Meta": {"external-source": "nomad"},
    })
    yield alloc_id


GET_SERVICE = """
curl -s -G --data-urlencode "filter=ID matches \\"_nomad-task-$ALLOC-.*\\"" \
    "$ADDR/v1/agent/services" | jq -c --arg alloc "$ALLOC" "$PICK"
"""

RESHAPE_AND_PUT = """
service=$(curl -s -G --data-urlencode "filter=ID matches \\"_nomad-task-$ALLOC-.*\\"" \
    "$ADDR/v1/agent/services" | jq -c --arg alloc "$ALLOC" "$PICK")
changed=$(echo "$service" | jq -c --arg value "$LABEL" "$EDIT")
body=$(echo "$changed" | jq -c "$RESHAPE")
curl -s -o /dev/null -w "%{http_code}" -X PUT -d "$body" "$ADDR/v1/agent/service/register"
"""


def reshape_and_put(consul: ConsulTarget, alloc_id: str, edit: str, label: str) -> str:
    return shell(consul, RESHAPE_AND_PUT, ALLOC=alloc_id, PICK=PICK_SERVICE, EDIT=edit,
                 LABEL=label, RESHAPE=TO_REGISTRATION)


def agent_tags(consul: ConsulTarget, alloc_id: str) -> list[str]:
    service = json.loads(shell(consul, GET_SERVICE, ALLOC=alloc_id, PICK=PICK_SERVICE))
    tags: list[str] = service["Tags"]
    return tags


@real_consul
def test_filter_by_alloc_finds_exactly_the_task_service(
    consul: ConsulTarget, alloc: str
) -> None:
    """`ID matches "_nomad-task-<alloc>-.*"` through curl --data-urlencode, then jq."""
    consul.register_service({"ID": f"_nomad-task-{alloc}x-other", "Name": "other"})
    service = json.loads(shell(consul, GET_SERVICE, ALLOC=alloc, PICK=PICK_SERVICE))
    assert service["ID"] == f"_nomad-task-{alloc}-db-postgres-db"
    assert (service["Tags"], service["Port"]) == (["v1"], 5432)


@real_consul
def test_adding_a_tag_through_the_reshaped_agent_json(consul: ConsulTarget, alloc: str) -> None:
    """add_tag: `.Tags + [label] | unique`, `.Name = .Service`, drop Service/Datacenter, PUT."""
    assert reshape_and_put(consul, alloc, ADD_TAG, "primary") == "200"
    assert agent_tags(consul, alloc) == ["primary", "v1"]
    service_id = f"_nomad-task-{alloc}-db-postgres-db"
    catalog = consul.get(f"/v1/catalog/service/{consul.unique('postgres')}").json()
    assert [(entry["ServiceID"], entry["ServiceTags"]) for entry in catalog] == [
        (service_id, ["primary", "v1"])]


@real_consul
def test_removing_a_tag_keeps_every_other_field(consul: ConsulTarget, alloc: str) -> None:
    """remove_tag: `del(.Tags[] | select(. == label))`; meta, port, address survive."""
    assert reshape_and_put(consul, alloc, ADD_TAG, "primary") == "200"
    assert reshape_and_put(consul, alloc, REMOVE_TAG, "primary") == "200"
    service = json.loads(shell(consul, GET_SERVICE, ALLOC=alloc, PICK=PICK_SERVICE))
    assert service["Tags"] == ["v1"]
    assert (service["Port"], service["Address"]) == (5432, "10.0.0.5")
    assert service["Meta"] == {"external-source": "nomad"}


@real_consul
def test_adding_session_meta(consul: ConsulTarget, alloc: str) -> None:
    """add_metadata: `.Meta + {"session": id}` through the same reshape."""
    assert reshape_and_put(consul, alloc, ADD_SESSION_META, "sess-1") == "200"
    service = json.loads(shell(consul, GET_SERVICE, ALLOC=alloc, PICK=PICK_SERVICE))
    assert service["Meta"] == {"external-source": "nomad", "session": "sess-1"}


@real_consul
def test_sending_the_agent_json_unreshaped_is_refused(consul: ConsulTarget, alloc: str) -> None:
    """Without the reshape, strict decoding refuses `Service` (hashicorp/consul#8444)."""
    status = shell(consul, RESHAPE_AND_PUT, ALLOC=alloc, PICK=PICK_SERVICE, EDIT=ADD_TAG,
                   LABEL="primary", RESHAPE=".")
    assert status == "400"


LOCK_CYCLE = """
code() { curl -s -o /dev/null -w "%{http_code}" "$@"; }
echo "check_key=$(code "$ADDR/v1/kv$KEY")"
echo "create_key=$(code -X PUT "$ADDR/v1/kv$KEY")"
echo "check_key=$(code "$ADDR/v1/kv$KEY")"
session=$(curl -s -X PUT \
    -d '{ "Name": "Consul-Leader API Lock: svc", "TTL": "15s", "LockDelay": "0s" }' \
    "$ADDR/v1/session/create" | jq -c -r '.ID//empty')
echo "session_length=$(expr length "$session")"
echo "acquire=$(curl -s -X PUT "$ADDR/v1/kv$KEY?acquire=$session")"
echo "renew=$(code -X PUT "$ADDR/v1/session/renew/$session")"
owner=$(curl -s "$ADDR/v1/kv$KEY?consistent" | jq -c -r '.[0].Session//empty')
[ "$owner" = "$session" ] && echo "owner=self" || echo "owner=$owner"
echo "destroy=$(curl -s -X PUT "$ADDR/v1/session/destroy/$session")"
echo "renew=$(code -X PUT "$ADDR/v1/session/renew/$session")"
owner=$(curl -s "$ADDR/v1/kv$KEY?consistent" | jq -c -r '.[0].Session//empty')
echo "owner=${owner:-none}"
"""


@real_consul
def test_the_scripts_lock_cycle(consul: ConsulTarget) -> None:
    """check/create key, session create (TTL 15s, LockDelay 0s), acquire, renew,
    `?consistent` owner, destroy, renew 404, no owner: consul.sh's loop step by step."""
    key = "/" + consul.key("consul-leader/svc/lock")
    lines = shell(consul, LOCK_CYCLE, KEY=key).splitlines()
    assert lines == [
        "check_key=404", "create_key=200", "check_key=200", "session_length=36",
        "acquire=true", "renew=200", "owner=self", "destroy=true", "renew=404", "owner=none",
    ]
