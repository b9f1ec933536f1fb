"""The publisher against a strict fake of the Consul port and a fake clock."""

from __future__ import annotations

import pytest

from consul_leader.adapters.consul.errors import ConsulDenied, ConsulUnavailable
from consul_leader.adapters.consul.port import AgentService, ServiceRead, ServicesRead
from consul_leader.adapters.publishing.labels import Role
from consul_leader.adapters.publishing.publisher import Publisher, PublisherSettings
from consul_leader.fsm.states import Event
from tests.adapter_testing import TIMINGS, FakeClock, Posts, StrictPort, health

TARGET = "_nomad-task-a1-db-db-db"
OTHER = "_nomad-task-a2-db-db-db"


def service(tags: tuple[str, ...] = ("v1",), meta: dict[str, str] | None = None,
            content_hash: str | None = "h1") -> ServiceRead:
    meta = {"external-source": "nomad"} if meta is None else meta
    definition = {"ID": TARGET, "Service": "db", "Tags": list(tags), "Meta": meta,
                  "Port": 5432, "Address": "10.0.0.5", "ContentHash": content_hash}
    return ServiceRead(AgentService(TARGET, "db", tags, meta, "10.0.0.5", 5432, definition),
                       content_hash)


def publisher(service_ids: tuple[str, ...] = (TARGET,), alloc_id: str | None = None,
              replica: str | None = "replica") -> tuple[Publisher, StrictPort, Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = PublisherSettings(service_ids=service_ids, alloc_id=alloc_id, service_name="db",
                                 primary_label="primary", replica_label=replica, timings=TIMINGS)
    watched: list[str] = []
    p = Publisher(settings, port, posts, clock=clock, spawn_watch=watched.append)
    return p, port, posts, clock


def registered(tags: list[str], session: str | None = None):  # type: ignore[no-untyped-def]
    def check(call) -> bool:  # type: ignore[no-untyped-def]
        body = call.args[0]
        return body["Tags"] == tags and body["Meta"].get("session") == session \
            and body["ID"] == TARGET and "ContentHash" not in body
    return check


def as_replica(p: Publisher, port: StrictPort, posts: Posts) -> None:
    """The first step: targets announced, replica label written and verified."""
    port.expect("agent_service", service())
    port.expect("service_register", None, check=registered(["v1", "replica"]))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True)))
    p.step()
    posts.clear()


def test_the_replica_role_is_published_and_verified_before_it_is_reported() -> None:
    p, port, posts, _ = publisher()
    port.expect("agent_service", service())
    port.expect("service_register", None, check=registered(["v1", "replica"]))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True)))

    assert p.step() is None

    assert posts.events() == [Event.TARGETS_FOUND, Event.REPLICA_PUBLISHED]
    assert posts.items[0].facts.targets == (TARGET,)
    assert p.published(Role.REPLICA)
    port.assert_done()


def test_a_health_answer_cut_down_by_acls_keeps_us_from_competing(
        caplog: pytest.LogCaptureFixture) -> None:
    p, port, posts, clock = publisher()
    port.expect("agent_service", service())
    port.expect("service_register", None)
    port.expect("health_service", health(filtered=True))
    due = p.step()
    assert Event.REPLICA_PUBLISHED not in posts.events()
    assert due is not None and due > clock.now  # tried again later
    assert "node:read" in caplog.text


def test_without_targets_there_is_nothing_to_publish_and_nothing_to_wait_for() -> None:
    p, port, posts, _ = publisher(service_ids=())
    p.step()
    assert posts.events() == [Event.REPLICA_PUBLISHED] and port.calls == []


def test_the_allocations_services_are_found_then_published() -> None:
    p, port, posts, clock = publisher(service_ids=(), alloc_id="a1")
    port.expect("agent_services", ServicesRead({}))
    due = p.step()
    assert posts.items == [] and due == clock.now + TIMINGS.discovery_interval
    clock.now = due
    db = service().service
    assert db is not None
    port.expect("agent_services", ServicesRead({TARGET: db, OTHER: db}))
    port.expect("agent_service", service())
    port.expect("service_register", None)
    port.expect("health_service", health((TARGET, ("v1",), True)))
    p.step()
    assert posts.events() == [Event.TARGETS_FOUND, Event.REPLICA_PUBLISHED]
    assert posts.items[0].facts.targets == (TARGET,)


def test_a_leader_publishes_primary_when_no_other_instance_is_a_passing_primary() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now + TIMINGS.ttl)
    port.expect("agent_service", service(("v1", "replica")))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True),
                                         (OTHER, ("v1", "primary"), False)))
    port.expect("service_register", None, check=registered(["v1", "primary"], "s1"))
    p.step()
    assert posts.events() == [Event.PRIMARY_PUBLISHED]
    port.assert_done()


def test_never_primary_on_a_lease_that_ran_out() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now)
    port.expect("agent_service", service(("v1", "replica")))
    p.step()
    assert posts.items == [] and not p.published(Role.PRIMARY)
    port.assert_done()


def test_a_new_leader_waits_for_another_passing_primary_and_reports_it_once() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now + 10 * TIMINGS.ttl)
    others = health((TARGET, ("v1",), True), (OTHER, ("v1", "primary"), True))
    port.always("agent_service", service(("v1", "replica")))
    port.always("health_service", others)
    for _ in range(3):
        due = p.step()
        assert due == clock.now + TIMINGS.other_primary_recheck
        clock.now = due
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN]
    assert posts.last().facts.others == (OTHER,)
    assert not p.published(Role.PRIMARY)
    # It goes: the label goes on.
    port.always("health_service", health((TARGET, ("v1",), True), (OTHER, ("v1",), True)))
    port.expect("service_register", None, check=registered(["v1", "primary"], "s1"))
    p.step()
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.PRIMARY_PUBLISHED]


def test_past_the_bound_it_reports_the_wait_over_and_publishes_when_told() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now + 10 * TIMINGS.ttl)
    port.always("agent_service", service(("v1", "replica")))
    port.always("health_service", health((TARGET, ("v1",), True), (OTHER, ("primary",), True)))
    p.step()
    p.hold_for_other_primary_until(clock.now + TIMINGS.other_primary_wait)
    while Event.OTHER_PRIMARY_WAIT_OVER not in posts.events():
        clock.now = p.step() or clock.now
    assert clock.now >= 1000.0 + TIMINGS.other_primary_wait
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.OTHER_PRIMARY_WAIT_OVER]
    port.expect("service_register", None, check=registered(["v1", "primary"], "s1"))
    p.publish_over_other_primary()
    p.step()
    assert posts.events()[-1] is Event.PRIMARY_PUBLISHED


def test_a_denied_write_is_reported_once_and_retried_slowly() -> None:
    p, port, posts, clock = publisher()
    port.always("agent_service", service())
    port.always("service_register", ConsulDenied("permission denied", status=403))
    for _ in range(3):
        due = p.step()
        assert due == clock.now + TIMINGS.retry_cap
        clock.now = due
    assert posts.events() == [Event.TARGETS_FOUND, Event.PUBLISH_REFUSED]


def test_transient_faults_are_retried_with_a_pause() -> None:
    p, port, posts, clock = publisher()
    port.always("agent_service", ConsulUnavailable("no cluster leader"))
    for _ in range(5):
        due = p.step()
        assert due is not None and due > clock.now
        clock.now = due
    assert posts.events() == [Event.TARGETS_FOUND]


def test_a_target_gone_past_its_grace_is_reported_once() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    port.always("agent_service", ServiceRead(None, None))
    p.publish(Role.REPLICA, "s1", None)
    due = p.step()
    assert due == clock.now + TIMINGS.target_grace and posts.items == []
    clock.now = due
    p.step()
    clock.advance(TIMINGS.target_grace)
    p.step()
    assert posts.events() == [Event.TARGET_GONE]
    assert posts.last().facts.targets == (TARGET,)


def test_a_target_back_within_its_grace_is_written_again_and_never_reported_gone() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.REPLICA, "s1", None)
    port.expect("agent_service", ServiceRead(None, None))
    p.step()
    clock.advance(TIMINGS.target_grace / 2)
    # Its watch sees it back (without our labels), which wakes the applier.
    port.expect("agent_service", service(content_hash="h2"))
    assert p.watch_step(TARGET) == clock.now + TIMINGS.min_watch_interval
    port.expect("agent_service", service())
    port.expect("service_register", None, check=registered(["v1", "replica"], "s1"))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True)))
    p.step()
    clock.advance(TIMINGS.target_grace)
    p.step()
    assert posts.events() == [Event.REPLICA_PUBLISHED]


def test_the_labels_are_put_back_when_someone_re_registers_the_target() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    woken: list[bool] = []
    p.wake = lambda: woken.append(True)
    port.expect("agent_service", service(("v1", "replica"), content_hash="h1"))
    p.watch_step(TARGET)
    port.expect("agent_service", service(content_hash="h9"),
                check=lambda c: c.kwargs["hash"] == "h1" and c.kwargs["wait"] == "300s")
    p.watch_step(TARGET)
    assert woken
    port.expect("agent_service", service())
    port.expect("service_register", None, check=registered(["v1", "replica"]))
    p.step()
    port.assert_done()


def test_an_outcome_of_a_superseded_request_is_not_reported() -> None:
    p, port, posts, clock = publisher()

    def superseded(call):  # type: ignore[no-untyped-def]
        p.publish(Role.PRIMARY, "s1", clock.now + TIMINGS.ttl)
        return health((TARGET, ("v1", "replica"), True))

    port.expect("agent_service", service())
    port.expect("service_register", None)
    port.expect("health_service", superseded)
    p.step()
    assert Event.REPLICA_PUBLISHED not in posts.events()


def test_waiting_for_a_role_ends_when_consul_shows_it_or_at_the_timeout() -> None:
    p, _, _, _ = publisher(service_ids=())
    assert not p.wait_published(Role.REPLICA, timeout=0.0)
    p.step()
    assert p.wait_published(Role.REPLICA, timeout=0.0)
    p.publish(Role.PRIMARY, "s1", None)
    assert not p.wait_published(Role.REPLICA, timeout=0.0)


def test_a_stopped_publisher_sends_nothing() -> None:
    p, port, _, _ = publisher()
    p.stop()
    assert p.step() is None and p.watch_step(TARGET) is None
    assert port.calls == []
