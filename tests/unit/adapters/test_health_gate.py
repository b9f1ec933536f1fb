"""The health gate against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.consul.port import AgentService, HealthEntry, HealthRead, ServiceRead
from consul_leader.adapters.election.health_gate import GateSettings, HealthGate
from consul_leader.fsm.states import Event
from tests.adapter_testing import TIMINGS, FakeClock, Posts, StrictPort

TARGET = "_nomad-task-a1-db"
NAME = "db"


def gate() -> tuple[HealthGate, StrictPort, Posts, FakeClock, list[str]]:
    clock = FakeClock()
    port, posts, spawned = StrictPort(clock), Posts(), []
    g = HealthGate(GateSettings(TIMINGS), port, posts, clock=clock, spawn_watch=spawned.append)
    return g, port, posts, clock, spawned


def instance(*checks: tuple[str, str], service_id: str = TARGET) -> HealthEntry:
    return HealthEntry(service_id, "n1", (), tuple(status for _, status in checks),
                       check_ids=tuple(check_id for check_id, _ in checks))


def read(*entries: HealthEntry, index: int = 7, filtered: bool = False) -> HealthRead:
    return HealthRead(entries, filtered, index)


HEALTHY = instance(("serfHealth", "passing"), ("_nomad-check-1", "passing"))
NODE_MAINT = instance(("serfHealth", "passing"), ("_node_maintenance", "critical"),
                      ("_nomad-check-1", "passing"))


def watching() -> tuple[HealthGate, StrictPort, Posts, FakeClock]:
    """A gate that knows its target's name and watches it."""
    g, port, posts, clock, spawned = gate()
    port.expect("agent_service", ServiceRead(AgentService(TARGET, NAME), "h1"),
                check=lambda call: call.args == (TARGET,))
    g.set_targets([TARGET])
    g.step()
    assert spawned == [NAME]
    return g, port, posts, clock


def test_nothing_is_reported_before_the_first_verdict() -> None:
    _g, port, posts, _ = watching()
    assert posts.items == []
    port.assert_done()


def test_the_first_verdict_is_reported_and_then_only_its_changes() -> None:
    g, port, posts, clock = watching()
    port.expect("health_service", read(HEALTHY, index=7),
                check=lambda call: call.args == (NAME,) and "index" not in call.kwargs)
    due = g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY]
    assert due == clock.now + TIMINGS.min_watch_interval  # rate-limited, never a hot loop

    port.expect("health_service", read(HEALTHY, index=9),
                check=lambda call: call.kwargs["index"] == 7
                and call.kwargs["wait"] == TIMINGS.watch_wait_text
                and call.kwargs["timeout"] == TIMINGS.watch_timeout)
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY]  # unchanged: nothing posted

    port.expect("health_service", read(NODE_MAINT, index=12))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY, Event.APPLICATION_CRITICAL]
    assert posts.last().facts.check_id == "_node_maintenance"
    assert "_node_maintenance critical" in posts.last().reason
    port.assert_done()


def test_a_target_not_listed_or_hidden_is_critical() -> None:
    g, port, posts, _ = watching()
    port.expect("health_service", read(instance(("c", "passing"), service_id="other"),
                                       filtered=True))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_CRITICAL]
    assert "filtered by ACLs" in posts.last().reason


def test_a_warning_is_not_critical() -> None:
    g, port, posts, _ = watching()
    port.expect("health_service", read(instance(("c", "warning"))))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY]


def test_a_recheck_reports_a_healthy_verdict_again_after_a_growing_backoff() -> None:
    g, port, posts, clock = watching()
    port.expect("health_service", read(HEALTHY))
    g.watch_step(NAME)
    posts.clear()

    waits = []
    for _ in range(6):
        g.recheck()
        due = g.step()
        assert due is not None and posts.items == []  # not at once
        waits.append(due - clock.now)
        clock.now = due
        g.step()
        assert posts.events() == [Event.APPLICATION_HEALTHY]
        posts.clear()
    assert waits == sorted(waits) and waits[-1] == TIMINGS.retry_cap
    port.assert_done()


def test_a_recheck_of_a_critical_verdict_waits_for_the_change() -> None:
    g, port, posts, clock = watching()
    port.expect("health_service", read(NODE_MAINT))
    g.watch_step(NAME)
    posts.clear()
    g.recheck()
    clock.advance(TIMINGS.retry_cap)
    g.step()
    assert posts.items == []
    port.expect("health_service", read(HEALTHY, index=20))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY]


def test_a_failed_watch_retries_from_scratch_after_the_retry_cap() -> None:
    g, port, _posts, clock = watching()
    port.expect("health_service", read(HEALTHY, index=7))
    g.watch_step(NAME)
    port.expect("health_service", ConsulUnavailable("no answer"))
    assert g.watch_step(NAME) == clock.now + TIMINGS.retry_cap
    port.expect("health_service", read(HEALTHY, index=8),
                check=lambda call: "index" not in call.kwargs)
    g.watch_step(NAME)
    port.assert_done()


def test_an_unregistered_target_is_looked_up_again_later() -> None:
    g, port, _posts, clock, spawned = gate()
    port.expect("agent_service", ServiceRead(None, None))
    g.set_targets([TARGET])
    due = g.step()
    assert due == clock.now + TIMINGS.discovery_interval and spawned == []
    clock.now = due
    port.expect("agent_service", ServiceRead(AgentService(TARGET, NAME), "h1"))
    g.step()
    assert spawned == [NAME]
    port.assert_done()


def test_every_target_must_be_healthy() -> None:
    g, port, posts, _clock, spawned = gate()
    other = "_nomad-task-a1-db-metrics"
    port.expect("agent_service", ServiceRead(AgentService(TARGET, NAME), "h1"))
    port.expect("agent_service", ServiceRead(AgentService(other, "db-metrics"), "h2"))
    g.set_targets([TARGET, other])
    g.step()
    assert spawned == [NAME, "db-metrics"]
    port.expect("health_service", read(HEALTHY))
    g.watch_step(NAME)
    assert posts.items == []  # the other target has no verdict yet
    port.expect("health_service", read(instance(("svc", "critical"), service_id=other)))
    g.watch_step("db-metrics")
    assert posts.events() == [Event.APPLICATION_CRITICAL]
    assert posts.last().reason == f"{other}: svc critical"


def test_our_alias_check_listed_critical_keeps_the_verdict_critical() -> None:
    """After node maintenance ends the target passes, but Consul's alias (which refuses the
    session) re-evaluates only later: wait for it on the watch instead of retrying."""
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    g = HealthGate(GateSettings(TIMINGS, alias_check_prefix="consul-leader:alias:"), port,
                   posts, clock=clock)
    port.expect("agent_service", ServiceRead(AgentService(TARGET, NAME), "h1"))
    g.set_targets([TARGET])
    g.step()
    ours = instance(("consul-leader:alias:" + TARGET, "critical"), ("role", "critical"),
                    service_id="consul-leader-a1-" + TARGET)
    port.expect("health_service", read(HEALTHY, ours))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_CRITICAL]
    assert posts.last().facts.check_id == "consul-leader:alias:" + TARGET
    ours_passing = instance(("consul-leader:alias:" + TARGET, "passing"), ("role", "critical"),
                            service_id="consul-leader-a1-" + TARGET)
    port.expect("health_service", read(HEALTHY, ours_passing, index=9))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_CRITICAL, Event.APPLICATION_HEALTHY]


def test_a_recheck_before_any_verdict_does_not_spin() -> None:
    """Found by the fuzzer: a recheck due with no verdict yet kept the step due at once."""
    g, port, posts, clock = watching()
    g.recheck()
    clock.advance(TIMINGS.retry_cap)
    assert g.step() is None  # nothing due: the first verdict is reported when it comes
    port.expect("health_service", read(HEALTHY))
    g.watch_step(NAME)
    assert posts.events() == [Event.APPLICATION_HEALTHY]
