"""Fencing end to end, with Nomad in the loop: each allocation's main task is the writer
(tests/fencing/writer.py), which writes to a fenced store with the token of its sidecar's
leader file. A stale leader keeps writing; the store must reject it once the new leader has
written, and Consul's journal of the lock key must show no stale write accepted.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.consul_double import ConsulDouble
from tests.fencing.judge import FencingFigures
from tests.fencing.store import Attempt, StoreServer
from tests.fencing.writers import figures_of, writer_command
from tests.harness import NomadGroup, NomadSidecar, running_group, wait_for
from tests.integration.conftest import SLEEP, TTL
from tests.nomad_double.jobs import MAIN_TASK

pytestmark = pytest.mark.slow

FAILOVER = 2 * TTL + 2.0  # a paused or killed leader's session expires within 2 x TTL
WRITES = 5.0  # a writer writes every 40 ms: a few seconds is plenty on a loaded machine
RESTARTED = 1.25 * TTL + 5.0  # Nomad's restart delay (the harness's: TTL), jitter, a start


@pytest.fixture
def store() -> Iterator[StoreServer]:
    with StoreServer() as server:
        yield server


def fenced_group(consul: ConsulDouble, workdir: Path, store: StoreServer,
                 nodes: list[str] | None = None) -> Iterator[NomadGroup]:
    with running_group(consul, workdir, nodes, ttl=f"{TTL:g}s", sleep=f"{SLEEP:g}",
                       main_command=tuple(writer_command(store.url))) as group:
        assert isinstance(group, NomadGroup)
        yield group


@pytest.fixture
def group(consul: ConsulDouble, tmp_path: Path, store: StoreServer) -> Iterator[NomadGroup]:
    yield from fenced_group(consul, tmp_path, store)


@pytest.fixture
def lone(consul: ConsulDouble, tmp_path: Path, store: StoreServer) -> Iterator[NomadGroup]:
    yield from fenced_group(consul, tmp_path, store, nodes=["n1"])


def writes(store: StoreServer, writer: NomadSidecar, *, token: int | None = None,
           accepted: bool | None = None) -> list[Attempt]:
    return [a for a in store.store.record() if a.writer == writer.alloc_id
            and token in (None, a.token) and accepted in (None, a.accepted)]


def token_of(sidecar: NomadSidecar) -> int:
    return int(wait_for(lambda: sidecar.status()["fencing_token"], 2.0, "a fencing token"))


def leader_file(sidecar: NomadSidecar) -> Path:
    """Where the sidecar writes it by default: $NOMAD_ALLOC_DIR/$NOMAD_ALLOC_ID."""
    return Path(sidecar.task_runner.dirs.shared) / sidecar.alloc_id


def demoted_at(sidecar: NomadSidecar) -> float | None:
    """When its writer noticed the demotion (its leader file gone), by its own line."""
    assert sidecar.allocation is not None
    out = sidecar.allocation.task(MAIN_TASK).dirs.stdout
    found = re.search(r"^demoted: .* (\d+\.\d+)$", out.read_text(), re.MULTILINE)
    return float(found.group(1)) if found else None


def judged(consul: ConsulDouble, store: StoreServer, group: NomadGroup) -> FencingFigures:
    return figures_of(store.store, consul, group.kv_path)


def assert_fencing_held(figures: FencingFigures) -> None:
    assert figures.violations(0.0) == []
    assert figures.stale_accepted == [] and figures.foreign == []


def test_a_paused_leaders_writer_is_fenced_off_once_the_new_leader_writes(
        consul: ConsulDouble, store: StoreServer, group: NomadGroup) -> None:
    """The leader's sidecar is paused (SIGSTOP) while its application runs on: it cannot
    learn it lost the lock, so its leader file stays and its writer goes on writing with the
    old token. Leadership moves; once the new leader's writer has written, every write of the
    old one is rejected, until its sidecar resumes, removes the file and the writer stops."""
    old = group.wait_single_primary(timeout=5.0)
    assert isinstance(old, NomadSidecar)
    old_token = token_of(old)
    wait_for(lambda: writes(store, old, token=old_token, accepted=True), WRITES,
             "the leader's writer writing with its token")
    old.send(signal.SIGSTOP)
    new = group.wait_single_primary(timeout=FAILOVER, exclude=old)
    assert isinstance(new, NomadSidecar)
    new_token = token_of(new)
    assert new_token > old_token
    wait_for(lambda: writes(store, new, token=new_token, accepted=True), WRITES,
             "the new leader's writer writing")
    wait_for(lambda: writes(store, old, token=old_token, accepted=False), WRITES,
             "the paused leader's writer fenced off")
    old.resume()
    noticed = wait_for(lambda: demoted_at(old), FAILOVER, "the old writer told of its demotion")
    assert noticed is not None
    figures = judged(consul, store, group)
    assert_fencing_held(figures)
    assert figures.rejected > 0 and figures.terms >= 2
    assert not [a for a in writes(store, old) if a.at > noticed], "it wrote after its demotion"


def test_a_killed_leaders_leftover_leader_file_is_removed_when_nomad_restarts_it(
        consul: ConsulDouble, store: StoreServer, group: NomadGroup) -> None:
    """SIGKILL leaves the leader file behind (nothing runs to remove it) and the writer goes on
    writing with the dead leader's token: fenced off. When Nomad runs the sidecar again, the
    new run leads nothing yet, so it removes the file and the application stops."""
    old = group.wait_single_primary(timeout=5.0)
    assert isinstance(old, NomadSidecar)
    old_token = token_of(old)
    wait_for(leader_file(old).exists, WRITES, "the leader file")
    old.send(signal.SIGKILL)
    new = group.wait_single_primary(timeout=FAILOVER, exclude=old)
    assert isinstance(new, NomadSidecar)
    wait_for(lambda: writes(store, old, token=old_token, accepted=False), WRITES,
             "the dead leader's writer fenced off")
    old.wait_restarted(timeout=RESTARTED)
    wait_for(lambda: old.status()["state"] == "Follower", FAILOVER, "the new run following")
    wait_for(lambda: demoted_at(old), WRITES, "the writer told it no longer leads")
    assert not leader_file(old).exists()
    assert_fencing_held(judged(consul, store, group))


@pytest.mark.parametrize("fault", ["key deleted", "session destroyed"])
def test_the_same_instance_leading_again_gets_a_higher_token_and_writes_with_it(
        consul: ConsulDouble, store: StoreServer, lone: NomadGroup, fault: str) -> None:
    """One instance alone: it loses the lock and takes it again, so the new term is its own.
    Its token must still grow (a writer of its old term may still be in flight) and its
    writer must switch to the new one."""
    (sidecar,) = lone.sidecars
    assert isinstance(sidecar, NomadSidecar)
    wait_for(lambda: sidecar.status()["state"] == "Leader", 5.0, "a leader")
    first = token_of(sidecar)
    wait_for(lambda: writes(store, sidecar, token=first, accepted=True), WRITES, "its writes")
    agent = lone.any_agent()
    if fault == "key deleted":
        requests.delete(f"{agent}/v1/kv/{lone.kv_path}", timeout=5).raise_for_status()
    else:
        session = sidecar.status()["session"]
        requests.put(f"{agent}/v1/session/destroy/{session}", timeout=5).raise_for_status()
    second = wait_for(lambda: sidecar.status()["state"] == "Leader"
                      and token_of(sidecar) != first and token_of(sidecar), FAILOVER,
                      "it leading again, in a new term")
    assert second > first
    wait_for(lambda: writes(store, sidecar, token=second, accepted=True), WRITES,
             "its writes with the new token")
    figures = judged(consul, store, lone)
    assert_fencing_held(figures)
    assert figures.terms >= 2
