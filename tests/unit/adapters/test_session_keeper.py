"""The session keeper against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

import pytest

from consul_leader.adapters.consul.errors import (
    CheckNotUsable,
    ConsulDenied,
    ConsulError,
    ConsulUnavailable,
    SettingRefused,
)
from consul_leader.adapters.consul.port import SessionSpec
from consul_leader.adapters.election.key import LockHolder
from consul_leader.adapters.election.session import KeeperSettings, SessionKeeper
from consul_leader.fsm.states import Event
from tests.adapter_testing import KEY, TIMINGS, FakeClock, Posts, StrictPort

HOLDER = LockHolder(host="h1", service="db", alloc_id="a1")
SPEC = SessionSpec(name="db", ttl="3s", lock_delay="0s")
BOUND = ("lease", "role")


def keeper(node_to_verify: str | None = None) -> tuple[SessionKeeper, StrictPort, Posts,
                                                        FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = KeeperSettings(session=SPEC, kv_path=KEY, holder=HOLDER, timings=TIMINGS,
                              node_to_verify=node_to_verify)
    return SessionKeeper(settings, port, posts, clock=clock), port, posts, clock


def with_session(session: str = "s1") -> tuple[SessionKeeper, StrictPort, Posts, FakeClock]:
    k, port, posts, clock = keeper()
    port.expect("session_create", session)
    k.create()
    k.step()
    posts.clear()
    return k, port, posts, clock


def test_nothing_happens_until_the_machine_asks_for_a_session() -> None:
    k, port, posts, _ = keeper()
    assert k.step() is None
    assert port.calls == [] and posts.items == []


def test_a_created_session_binds_its_checks_and_starts_a_lease_from_the_send_time() -> None:
    k, port, posts, clock = keeper()
    bound_spec = SessionSpec(name="db", ttl="3s", lock_delay="0s", service_checks=BOUND)
    port.expect("session_create", "s1", check=lambda call: call.args[0] == bound_spec,
                takes=0.2)
    k.create(BOUND)
    sent_at = clock.now

    due = k.step()

    assert posts.events() == [Event.SESSION_CREATED]
    assert posts.last().facts.session == "s1"
    assert posts.last().facts.valid_until == sent_at + TIMINGS.ttl
    assert due == sent_at + TIMINGS.renew_interval
    port.assert_done()


def test_a_confirmed_renew_extends_the_lease_and_is_reported() -> None:
    k, port, posts, clock = with_session()
    clock.advance(TIMINGS.renew_interval)
    port.expect("session_renew", True, check=lambda call: call.args == ("s1",), takes=0.05)
    sent_at = clock.now

    k.step()

    assert posts.events() == [Event.LEASE_RENEWED]
    assert posts.last().facts.valid_until == sent_at + TIMINGS.ttl
    port.assert_done()


def test_a_renew_answered_404_loses_the_session_then_releases_with_the_holders_value() -> None:
    k, port, posts, clock = with_session()
    clock.advance(TIMINGS.renew_interval)
    port.expect("session_renew", False)
    port.expect("kv_release", True,
                check=lambda call: call.args == (KEY, "s1", HOLDER.value("s1")))
    port.expect("session_destroy", None)

    k.step()

    assert posts.events() == [Event.SESSION_LOST]
    assert k.lease_remaining() is None
    port.assert_done()


def test_failing_renews_retry_within_the_lease_and_expire_it_at_the_deadline() -> None:
    k, port, posts, clock = with_session()
    deadline = clock.now + TIMINGS.ttl
    port.always("session_renew", ConsulUnavailable("no cluster leader"))
    port.always("kv_release", ConsulUnavailable("no cluster leader"))
    clock.advance(TIMINGS.renew_interval)
    attempts = 0
    while True:
        due = k.step()
        if posts.items:
            break
        assert due is not None and due > clock.now, "a retry without a pause (hot loop)"
        attempts += 1
        clock.now = due
    assert posts.events() == [Event.LEASE_EXPIRED]
    assert clock.now == pytest.approx(deadline)
    assert 3 <= attempts <= 20
    assert port.unexpected == []


def test_a_renew_answered_after_the_deadline_does_not_revive_the_lease() -> None:
    k, port, posts, clock = with_session()
    clock.advance(TIMINGS.renew_interval)
    port.expect("session_renew", True, takes=TIMINGS.ttl)  # SIGSTOP in the middle
    port.always("kv_release", True).always("session_destroy", None)

    k.step()

    assert posts.events() == [Event.LEASE_EXPIRED]
    assert port.unexpected == []


@pytest.mark.parametrize(("problem", "body"), [
    ("missing", "rpc error making call: apply failed: Missing check 'lease' registration"),
    ("critical", "Check 'lease' is in critical state"),
])
def test_a_missing_or_critical_bound_check_is_reported_and_not_retried_alone(
        problem: str, body: str) -> None:
    k, port, posts, clock = keeper()
    cause = ConsulUnavailable("server error", status=500, body=body)
    port.expect("session_create", CheckNotUsable("lease", problem, cause))
    k.create()

    assert k.step() is None  # no retry of its own: the machine restores the check first

    assert posts.events() == [Event.BOUND_CHECK_MISSING]
    assert posts.last().facts.check_id == "lease"
    # Asked again at once (the check was registered and passed): it waits out a backoff.
    k.create()
    due = k.step()
    assert due is not None and due > clock.now
    clock.now = due
    port.expect("session_create", "s2")
    k.step()
    assert posts.events()[-1] is Event.SESSION_CREATED
    port.assert_done()


def test_a_ttl_consul_refuses_is_a_configuration_error() -> None:
    k, port, posts, _ = keeper()
    body = "Invalid Session TTL '3000000000', must be between [10s=24h0m0s]"
    cause = ConsulUnavailable("server error", status=500, body=body)
    port.expect("session_create", SettingRefused("CONSUL_LEADER_TTL", cause))
    k.create()

    assert k.step() is None

    assert k.fatal is not None and k.fatal.variable == "CONSUL_LEADER_TTL"
    assert posts.events() == [Event.SHUTDOWN]
    assert k.step() is None and len(port.calls) == 1


def test_a_session_node_other_than_the_local_agents_is_a_configuration_error() -> None:
    k, port, posts, _ = keeper(node_to_verify="n2")
    port.expect("agent_node_name", "n1")
    k.create()

    k.step()

    assert k.fatal is not None and k.fatal.variable == "CONSUL_LEADER_NODE"
    assert "'n1'" in str(k.fatal) and posts.events() == [Event.SHUTDOWN]
    port.assert_done()


def test_the_local_node_is_checked_once_then_the_session_is_created() -> None:
    k, port, posts, clock = keeper(node_to_verify="n1")
    port.expect("agent_node_name", ConsulDenied("permission denied", status=403))
    k.create()
    clock.now = k.step() or clock.now
    port.expect("agent_node_name", "n1").expect("session_create", "s1")
    k.step()
    assert posts.events() == [Event.SESSION_CREATED]
    port.assert_done()


def test_giving_a_session_up_releases_the_key_with_its_value_then_destroys_it() -> None:
    k, port, posts, _ = with_session()
    port.expect("kv_release", True, check=lambda call: call.args[2] == HOLDER.value("s1"))
    port.expect("session_destroy", None, check=lambda call: call.args == ("s1",))

    k.give_up("s1")
    k.step()

    assert posts.items == [] and k.lease_remaining() is None
    port.assert_done()


def test_cleanup_retries_until_consul_has_certainly_dropped_the_session() -> None:
    k, port, _, clock = with_session()
    k.give_up("s1")
    port.always("kv_release", ConsulUnavailable("connection refused"))
    tries = 0
    while (due := k.step()) is not None:
        assert due > clock.now
        clock.now = due
        tries += 1
    assert clock.now >= 1000.0 + TIMINGS.session_dead_after
    assert 2 <= tries <= TIMINGS.session_dead_after / TIMINGS.retry_cap + 2


def test_a_stale_give_up_leaves_the_current_session_alone() -> None:
    k, _, _, _ = with_session("s2")
    k.give_up("s1")
    k.give_up(None)
    assert k.lease_remaining() is not None


def test_shutdown_releases_then_destroys_every_session_it_holds() -> None:
    k, port, _, _ = with_session()
    port.expect("kv_release", True).expect("session_destroy", None)
    k.stop()
    k.release_and_destroy(timeout=1.0)
    assert port.names() == ["session_create", "kv_release", "session_destroy"]
    assert k.step() is None
    port.assert_done()


def test_shutdown_logs_a_failed_release_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    k, port, _, _ = with_session()
    port.expect("kv_release", ConsulError("refused"))
    k.stop()
    k.release_and_destroy(timeout=1.0)
    assert "could not release the lock" in caplog.text


def test_a_critical_alias_check_of_the_health_gate_is_the_application_not_ours_to_fix() -> None:
    """The health gate's alias check refused the session: `application_critical`, no retry
    of its own and no `bound_check_missing` (which would register the lease check again)."""
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = KeeperSettings(session=SPEC, kv_path=KEY, holder=HOLDER, timings=TIMINGS,
                              application_check_prefix="consul-leader:alias:")
    k = SessionKeeper(settings, port, posts, clock=clock)
    cause = ConsulUnavailable("server error", status=500,
                              body="Check 'consul-leader:alias:db' is in critical state")
    port.expect("session_create", CheckNotUsable("consul-leader:alias:db", "critical", cause))
    k.create()
    assert k.step() is None
    assert posts.events() == [Event.APPLICATION_CRITICAL]
    assert posts.last().facts.check_id == "consul-leader:alias:db"
    port.assert_done()


def test_a_create_cancelled_while_on_its_way_is_given_up_when_answered() -> None:
    k, port, posts, _ = keeper()
    k.create()
    port.expect("session_create", lambda call: (k.cancel_create(), "s9")[1])
    port.expect("kv_release", True)  # released and destroyed at once
    port.expect("session_destroy", None, check=lambda call: call.args == ("s9",))
    k.step()
    assert posts.items == []  # never reported: the machine no longer wanted it
    port.assert_done()
