"""The health checks against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.publishing.checks import (
    ChecksSettings,
    HealthChecks,
    lease_check_id,
    lease_service_id,
)
from consul_leader.adapters.publishing.labels import (
    alias_check_id,
    owned_service_id,
    role_check_id,
)
from consul_leader.fsm.states import Event
from tests.adapter_testing import (
    KEY,
    TIMINGS,
    FakeClock,
    InlineExecutor,
    Posts,
    StrictPort,
)

TARGET = "_nomad-task-a1-db-db-db"
LEASE, ROLE = lease_check_id("a1"), role_check_id(TARGET)


def checks(enabled: bool = True, owner: str | None = "a1") -> tuple[HealthChecks, StrictPort,
                                                                      Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = ChecksSettings(enabled=enabled, instance="a1", service_name="db", kv_path=KEY,
                              ttl_text="3s", timings=TIMINGS, owner=owner)
    c = HealthChecks(settings, port, posts, clock=clock, executor=InlineExecutor())
    c.set_targets([TARGET])
    return c, port, posts, clock


def passes(check_id: str):  # type: ignore[no-untyped-def]
    return lambda call: call.args[0] == check_id


def lease_service(call) -> bool:  # type: ignore[no-untyped-def]
    body = call.args[0]
    check = body["Check"]
    return (body["ID"] == lease_service_id("a1") and check["CheckID"] == LEASE
            and check["TTL"] == "3s" and check["Status"] == "critical")


def role_check(call) -> bool:  # type: ignore[no-untyped-def]
    body = call.args[0]
    return (body["ID"] == ROLE and body["ServiceID"] == owned_service_id("a1", TARGET)
            and body["Status"] == "critical" and body["TTL"] == "2.75s")


def test_disabled_checks_do_nothing() -> None:
    c, port, posts, _ = checks(enabled=False)
    assert c.lease_check_id is None
    c.prepare_lease_check()
    c.pass_round(lease=True, roles=True, valid_until=None)
    assert c.step() is None and port.calls == [] and posts.items == []


def test_preparing_registers_the_lease_check_again_and_passes_every_check_to_bind() -> None:
    c, port, posts, _ = checks()
    port.expect("service_register", None, check=lease_service)
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    c.prepare_lease_check()

    assert c.step() is None

    assert posts.events() == [Event.LEASE_CHECK_PASSED]
    assert posts.last().facts.check_id == LEASE
    assert posts.last().facts.checks == (LEASE, ROLE)  # the session binds to all of them
    port.assert_done()


def test_preparing_retries_until_every_check_to_bind_passes() -> None:
    c, port, posts, clock = checks()
    port.always("service_register", None)
    port.expect("check_pass", ConsulUnavailable("timeout"), check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    c.prepare_lease_check()
    due = c.step()
    assert posts.items == [] and due is not None and due > clock.now
    clock.now = due
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    assert c.step() is None
    assert posts.events() == [Event.LEASE_CHECK_PASSED]
    port.assert_done()


def test_the_seed_compatible_mode_has_no_role_checks_at_all() -> None:
    c, port, posts, clock = checks(owner=None)
    port.expect("service_register", None, check=lease_service)
    port.expect("check_pass", True, check=passes(LEASE))
    c.prepare_lease_check()
    c.step()
    assert posts.last().facts.checks == (LEASE,)
    port.expect("check_pass", True, check=passes(LEASE))
    c.pass_round(lease=True, roles=True, valid_until=clock.now + 1)
    c.step()
    port.assert_done()


def test_a_round_passes_what_was_asked_while_the_lease_lasts() -> None:
    c, port, _, clock = checks()
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    c.pass_round(lease=True, roles=True, valid_until=clock.now + 1)
    c.step()
    port.expect("check_pass", True, check=passes(LEASE))
    c.pass_round(lease=True, roles=False, valid_until=clock.now + 1)
    c.step()
    c.pass_round(lease=True, roles=True, valid_until=clock.now)  # the lease ran out
    c.step()
    port.assert_done()


def test_rounds_asked_for_before_the_worker_ran_are_joined_not_dropped() -> None:
    c, port, _, clock = checks()
    # A renewed leader: the lease check first, then (lock confirmed) the role checks.
    c.pass_round(lease=True, roles=False, valid_until=clock.now + 1)
    c.pass_round(lease=False, roles=True, valid_until=clock.now + 2)
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    c.step()
    port.assert_done()


def test_a_check_consul_lost_is_registered_and_passed_again() -> None:
    c, port, _, clock = checks()
    port.expect("check_pass", False, check=passes(ROLE))  # 404, or 500 before Consul 1.11
    port.expect("check_register", True, check=role_check)
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", False, check=passes(LEASE))
    port.expect("service_register", None, check=lease_service)
    port.expect("check_pass", True, check=passes(LEASE))
    c.pass_round(lease=True, roles=True, valid_until=clock.now + 1)
    c.step()
    port.assert_done()


def test_a_role_check_of_a_target_that_is_gone_is_not_passed() -> None:
    c, port, _, clock = checks()
    port.expect("check_pass", False, check=passes(ROLE))
    port.expect("check_register", False)  # its service is not registered
    c.pass_round(lease=False, roles=True, valid_until=clock.now + 1)
    c.step()
    port.assert_done()


def test_a_failed_round_is_only_logged() -> None:
    c, port, posts, clock = checks()
    port.expect("check_pass", ConsulUnavailable("timeout"))
    c.pass_round(lease=True, roles=False, valid_until=clock.now + 1)
    assert c.step() is None and posts.items == []


def test_shutdown_deregisters_the_lease_service() -> None:
    c, port, _, _ = checks()
    port.expect("service_deregister", ConsulUnavailable("gone"),
                check=lambda call: call.args[0] == lease_service_id("a1"))
    c.stop()
    c.deregister_all(timeout=1.0)
    assert c.step() is None
    port.assert_done()


def test_with_the_health_gate_the_session_binds_to_the_alias_checks_too() -> None:
    """Consul then ends the session when the application goes critical, and refuses one
    while it is (the alias check is not ours to pass: it is only bound)."""
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = ChecksSettings(enabled=True, instance="a1", service_name="db", kv_path=KEY,
                              ttl_text="3s", timings=TIMINGS, owner="a1", bind_alias=True)
    c = HealthChecks(settings, port, posts, clock=clock, executor=InlineExecutor())
    c.set_targets([TARGET])
    port.expect("service_register", None, check=lease_service)
    port.expect("check_pass", True, check=passes(ROLE))
    port.expect("check_pass", True, check=passes(LEASE))
    c.prepare_lease_check()
    c.step()
    assert posts.last().facts.checks == (LEASE, ROLE, alias_check_id(TARGET))
    port.assert_done()
