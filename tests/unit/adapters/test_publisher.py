"""The publisher against a strict fake of the Consul port and a fake clock.

By default it publishes through an instance it owns for each target; the seed-compatible
mode labels the target itself (the tests at the end)."""

from __future__ import annotations

from typing import Any

import pytest

from consul_leader.adapters.consul.errors import ConsulDenied, ConsulUnavailable
from consul_leader.adapters.consul.port import (
    AgentService,
    HealthEntry,
    HealthRead,
    ServiceRead,
    ServicesRead,
)
from consul_leader.adapters.publishing.labels import (
    Role,
    alias_check_id,
    owned_service_id,
    role_check_id,
)
from consul_leader.adapters.publishing.publisher import Publisher, PublisherSettings
from consul_leader.fsm.states import Event
from tests.adapter_testing import TIMINGS, FakeClock, Posts, StrictPort, health

TARGET = "_nomad-task-a1-db-db-db"
OWNED = owned_service_id("a1", TARGET)
OTHER = owned_service_id("a2", "_nomad-task-a2-db-db-db")


def service(service_id: str = TARGET, tags: tuple[str, ...] = ("v1",),
            meta: dict[str, str] | None = None, content_hash: str | None = "h1",
            name: str = "db") -> ServiceRead:
    meta = {"external-source": "nomad"} if meta is None else meta
    definition = {"ID": service_id, "Service": name, "Tags": list(tags), "Meta": meta,
                  "Port": 5432, "Address": "10.0.0.5", "ContentHash": content_hash,
                  "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 5432},
                                      "wan": {"Address": "192.0.2.5", "Port": 15432}}}
    return ServiceRead(AgentService(service_id, name, tags, meta, "10.0.0.5", 5432,
                                    definition), content_hash)


def ours(tags: tuple[str, ...], session: str | None = None, **meta: str) -> ServiceRead:
    """The agent's copy of our instance, as we registered it."""
    all_meta = {"target": TARGET, "alloc": "a1", **({"session": session} if session else {}),
                **meta}
    return service(OWNED, tags, all_meta)


GONE = ServiceRead(None, None)


def publisher(owner: str | None = "a1", service_ids: tuple[str, ...] = (TARGET,),
              alloc_id: str | None = "a1", published_name: str | None = None,
              ) -> tuple[Publisher, StrictPort, Posts, FakeClock]:
    clock = FakeClock()
    port, posts = StrictPort(clock), Posts()
    settings = PublisherSettings(service_ids=service_ids, alloc_id=alloc_id, service_name="db",
                                 primary_label="primary", replica_label="replica",
                                 timings=TIMINGS, owner=owner, published_name=published_name)
    return Publisher(settings, port, posts, clock=clock), port, posts, clock


def owned_body(tags: list[str], session: str | None = None, name: str = "db",
               fencing_token: str | None = None):  # type: ignore[no-untyped-def]
    def check(call) -> bool:  # type: ignore[no-untyped-def]
        body = call.args[0]
        meta = {"target": TARGET, "alloc": "a1", **({"session": session} if session else {}),
                **({"fencing_token": fencing_token} if fencing_token else {})}
        return (body["ID"] == OWNED and body["Name"] == name and body["Tags"] == tags
                and body["Meta"] == meta and body["Address"] == "10.0.0.5"
                and body["Port"] == 5432 and body["EnableTagOverride"] is False
                and body["TaggedAddresses"] == {"wan": {"Address": "192.0.2.5", "Port": 15432}}
                and _checks_of(body) == {alias_check_id(TARGET): TARGET,
                                         role_check_id(TARGET): "2.75s"}
                and not call.kwargs["replace_existing_checks"])
    return check


def _checks_of(body: dict[str, Any]) -> dict[str, str]:
    return {c["CheckID"]: c.get("AliasService") or c["TTL"] for c in body["Checks"]}


def as_replica(p: Publisher, port: StrictPort, posts: Posts) -> None:
    """The first step: our replica instance registered and verified."""
    port.expect("agent_service", service())
    port.expect("agent_service", GONE)
    port.expect("service_register", None, check=owned_body(["v1", "replica"]))
    port.expect("health_service", health((TARGET, ("v1",), True), (OWNED, ("v1", "replica"),
                                                                     True)))
    p.step()
    posts.clear()


# -- registration mode (the default) ----------------------------------------------------------


def test_our_replica_instance_is_registered_and_verified_before_it_is_reported() -> None:
    p, port, posts, _ = publisher()
    port.expect("agent_service", service(), check=lambda c: c.args[0] == TARGET)
    port.expect("agent_service", GONE, check=lambda c: c.args[0] == OWNED)
    port.expect("service_register", None, check=owned_body(["v1", "replica"]))
    port.expect("health_service", health((OWNED, ("v1", "replica"), True)),
                check=lambda c: c.args[0] == "db")

    assert p.step() is None

    assert posts.events() == [Event.TARGETS_FOUND, Event.REPLICA_PUBLISHED]
    assert posts.items[0].facts.targets == (TARGET,)
    assert p.published(Role.REPLICA)
    port.assert_done()


def test_nothing_is_written_into_the_targets_own_registration() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", clock.now + TIMINGS.ttl, fencing_token=42)
    port.always("agent_service", lambda call: service() if call.args[0] == TARGET
                else ours(("v1", "replica")))
    port.expect("health_service", health((OWNED, ("v1", "replica"), True)))
    port.expect("service_register", None,
                check=owned_body(["v1", "primary"], "s1", fencing_token="42"))
    p.step()
    registered = [call.args[0]["ID"] for call in port.calls if call.method == "service_register"]
    assert TARGET not in registered
    assert posts.events() == [Event.PRIMARY_PUBLISHED]


def test_the_published_name_can_differ_from_the_targets() -> None:
    p, port, posts, _ = publisher(published_name="db-public")
    port.expect("agent_service", service(name="db-task"))
    port.expect("agent_service", GONE)
    port.expect("service_register", None, check=owned_body(["v1", "replica"], name="db-public"))
    port.expect("health_service", health((OWNED, (), True)),
                check=lambda c: c.args[0] == "db-public")
    p.step()
    assert posts.events()[-1] is Event.REPLICA_PUBLISHED


def test_our_instance_as_consul_shows_it_is_left_alone() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    p.publish(Role.REPLICA, None, None)  # same role, nothing changes
    port.expect("agent_service", service())
    port.expect("agent_service", ours(("v1", "replica")))
    p.step()
    assert posts.events() == [Event.REPLICA_PUBLISHED]
    port.assert_done()


def test_a_health_answer_cut_down_by_acls_keeps_us_from_competing(
        caplog: pytest.LogCaptureFixture) -> None:
    p, port, posts, clock = publisher()
    port.expect("agent_service", service()).expect("agent_service", GONE)
    port.expect("service_register", None)
    port.expect("health_service", health(filtered=True))
    due = p.step()
    assert Event.REPLICA_PUBLISHED not in posts.events()
    assert due is not None and due > clock.now  # tried again later
    assert "node:read" in caplog.text


def test_without_targets_there_is_nothing_to_publish_and_nothing_to_wait_for() -> None:
    p, port, posts, _ = publisher(service_ids=(), alloc_id=None)
    p.step()
    assert posts.events() == [Event.REPLICA_PUBLISHED] and port.calls == []


def test_the_allocations_services_are_found_then_published() -> None:
    p, port, posts, clock = publisher(service_ids=())
    watched: list[str] = []
    p._spawn_watch = watched.append  # the composition root starts a watch per ID
    port.expect("agent_services", ServicesRead({}))
    due = p.step()
    assert posts.items == [] and due == clock.now + TIMINGS.discovery_interval
    clock.now = due
    db = service().service
    assert db is not None
    other_alloc = AgentService("_nomad-task-a2-db-db-db", "db")
    port.expect("agent_services", ServicesRead({TARGET: db, other_alloc.id: other_alloc}))
    port.expect("agent_service", service()).expect("agent_service", GONE)
    port.expect("service_register", None)
    port.expect("health_service", health((OWNED, ("v1",), True)))
    p.step()
    assert posts.events() == [Event.TARGETS_FOUND, Event.REPLICA_PUBLISHED]
    assert posts.items[0].facts.targets == (TARGET,)
    assert watched == [TARGET, OWNED]  # ours too: someone may remove it


def primary_setup(p: Publisher, port: StrictPort, posts: Posts, clock: FakeClock,
                  others: Any) -> None:
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now + 10 * TIMINGS.ttl)
    port.always("agent_service", lambda call: service() if call.args[0] == TARGET
                else ours(("v1", "replica"), "s1"))
    port.always("health_service", others)


def test_a_leader_publishes_primary_when_no_other_instance_is_a_passing_primary() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, health(
        (TARGET, ("v1", "primary"), True),  # a target carrying a stale label is not an other
        (OWNED, ("v1", "replica"), True), (OTHER, ("v1", "primary"), False)))
    port.expect("service_register", None, check=owned_body(["v1", "primary"], "s1"))
    p.step()
    assert posts.events() == [Event.PRIMARY_PUBLISHED]
    port.assert_done()


def test_never_primary_on_a_lease_that_ran_out() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", valid_until=clock.now)
    port.always("agent_service", lambda call: service() if call.args[0] == TARGET
                else ours(("v1", "replica")))
    p.step()
    assert posts.items == [] and not p.published(Role.PRIMARY)
    assert "service_register" not in port.names()[-3:]


def test_a_new_leader_waits_for_another_passing_primary_and_reports_it_once() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, health((OWNED, ("v1",), True),
                                                (OTHER, ("v1", "primary"), True)))
    for _ in range(3):
        due = p.step()
        assert due == clock.now + TIMINGS.other_primary_recheck
        clock.now = due
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN]
    assert posts.last().facts.others == (OTHER,)
    assert not p.published(Role.PRIMARY)
    # It goes: the label goes on.
    port.always("health_service", health((OWNED, ("v1",), True), (OTHER, ("v1",), True)))
    port.expect("service_register", None, check=owned_body(["v1", "primary"], "s1"))
    p.step()
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.PRIMARY_PUBLISHED]


def test_past_the_bound_it_reports_the_wait_over_and_publishes_when_told() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, health((OWNED, ("v1",), True),
                                                (OTHER, ("primary",), True)))
    p.step()
    p.hold_for_other_primary_until(clock.now + TIMINGS.other_primary_wait)
    while Event.OTHER_PRIMARY_WAIT_OVER not in posts.events():
        clock.now = p.step() or clock.now
    assert clock.now >= 1000.0 + TIMINGS.other_primary_wait
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.OTHER_PRIMARY_WAIT_OVER]
    port.expect("service_register", None, check=owned_body(["v1", "primary"], "s1"))
    p.publish_over_other_primary()
    p.step()
    assert posts.events()[-1] is Event.PRIMARY_PUBLISHED


def test_a_denied_write_is_reported_once_and_retried_slowly() -> None:
    p, port, posts, clock = publisher()
    port.always("agent_service", lambda call: service() if call.args[0] == TARGET else GONE)
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
    port.always("agent_service", GONE)
    p.publish(Role.REPLICA, "s1", None)
    due = p.step()
    assert due == clock.now + TIMINGS.target_grace and posts.items == []
    clock.now = due
    p.step()
    clock.advance(TIMINGS.target_grace)
    p.step()
    assert posts.events() == [Event.TARGET_GONE]
    assert posts.last().facts.targets == (TARGET,)


def test_with_its_target_gone_our_instance_still_drops_a_role_we_no_longer_hold() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    p.publish(Role.REPLICA, None, None)  # stepped down while the target was deregistered
    port.expect("agent_service", GONE, check=lambda c: c.args[0] == TARGET)
    port.expect("agent_service", ours(("v1", "primary"), "s1", fencing_token="42"))
    port.expect("service_register", None, check=lambda c: (
        c.args[0]["ID"] == OWNED and c.args[0]["Tags"] == ["v1", "replica"]
        and c.args[0]["Meta"] == {"target": TARGET, "alloc": "a1"} and "Checks" not in c.args[0]))
    p.step()
    port.assert_done()


def test_a_clean_shutdown_waits_for_no_primary_of_ours_even_with_the_target_gone() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    p.publish(Role.REPLICA, None, None)
    port.always("agent_service", lambda c: GONE if c.args[0] == TARGET
                else ours(("v1", "replica")))
    p.step()
    assert p.wait_published(Role.REPLICA, timeout=0.0)
    assert Event.REPLICA_PUBLISHED not in posts.events()  # but nothing to compete for


def test_with_its_target_gone_our_instance_never_gains_the_primary_label() -> None:
    p, port, posts, clock = publisher()
    as_replica(p, port, posts)
    p.publish(Role.PRIMARY, "s1", clock.now + TIMINGS.ttl)
    port.expect("agent_service", GONE, check=lambda c: c.args[0] == TARGET)
    p.step()  # nothing else: no read of ours, no write
    port.assert_done()


def test_our_instance_removed_by_someone_is_registered_again() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    woken: list[bool] = []
    p.wake = lambda: woken.append(True)
    port.expect("agent_service", ours(("v1", "replica")))
    p.watch_step(OWNED)
    port.expect("agent_service", GONE)
    p.watch_step(OWNED)
    assert woken
    port.expect("agent_service", service()).expect("agent_service", GONE)
    port.expect("service_register", None, check=owned_body(["v1", "replica"]))
    port.expect("health_service", health((OWNED, ("v1", "replica"), True)))
    p.step()
    port.assert_done()


def test_a_target_re_registered_with_other_tags_is_followed() -> None:
    p, port, posts, _ = publisher()
    as_replica(p, port, posts)
    port.expect("agent_service", service(content_hash="h1"))
    p.watch_step(TARGET)
    port.expect("agent_service", service(tags=("v2",), content_hash="h9"),
                check=lambda c: c.kwargs["hash"] == "h1" and c.kwargs["wait"] == "300s")
    p.watch_step(TARGET)
    port.expect("agent_service", service(tags=("v2",)))
    port.expect("agent_service", ours(("v1", "replica")))
    port.expect("service_register", None, check=lambda c: c.args[0]["Tags"] == ["v2", "replica"])
    p.step()
    port.assert_done()


def test_an_outcome_of_a_superseded_request_is_not_reported() -> None:
    p, port, posts, clock = publisher()

    def superseded(call):  # type: ignore[no-untyped-def]
        p.publish(Role.PRIMARY, "s1", clock.now + TIMINGS.ttl)
        return health((OWNED, ("v1", "replica"), True))

    port.expect("agent_service", service()).expect("agent_service", GONE)
    port.expect("service_register", None)
    port.expect("health_service", superseded)
    p.step()
    assert Event.REPLICA_PUBLISHED not in posts.events()


def test_shutdown_withdraws_our_instances() -> None:
    p, port, _, _ = publisher()
    port.expect("service_deregister", True, check=lambda c: c.args[0] == OWNED)
    p.withdraw(timeout=1.0)
    port.assert_done()


def test_waiting_for_a_role_ends_when_consul_shows_it_or_at_the_timeout() -> None:
    p, _, _, _ = publisher(service_ids=(), alloc_id=None)
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


# -- the seed-compatible mode: labels on the target, never its Meta, never checks ------------


def labels_only(tags: list[str]):  # type: ignore[no-untyped-def]
    def check(call) -> bool:  # type: ignore[no-untyped-def]
        body = call.args[0]
        return (body["ID"] == TARGET and body["Tags"] == tags
                and body["Meta"] == {"external-source": "nomad"} and "Checks" not in body
                and "Check" not in body and "ContentHash" not in body)
    return check


def test_seed_mode_labels_the_target_and_leaves_its_meta_alone() -> None:
    p, port, posts, clock = publisher(owner=None)
    port.expect("agent_service", service())
    port.expect("service_register", None, check=labels_only(["v1", "replica"]))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True)))
    p.step()
    assert posts.events() == [Event.TARGETS_FOUND, Event.REPLICA_PUBLISHED]
    p.publish(Role.PRIMARY, "s1", clock.now + TIMINGS.ttl)
    port.expect("agent_service", service(tags=("v1", "replica")))
    port.expect("health_service", health((TARGET, ("v1", "replica"), True)))
    port.expect("service_register", None, check=labels_only(["v1", "primary"]))
    p.step()
    assert posts.events()[-1] is Event.PRIMARY_PUBLISHED
    port.assert_done()


def test_seed_mode_withdraws_nothing() -> None:
    p, port, _, _ = publisher(owner=None)
    p.withdraw(timeout=1.0)
    assert port.calls == []


# -- other primaries whose session is gone (evicted from the catalog) -------------------------


STALE = owned_service_id("a3", "_nomad-task-a3-db-db-db")


def primary_with_meta(service_id: str, node: str, **meta: str) -> HealthEntry:
    return HealthEntry(service_id, node, ("v1", "primary"), ("passing",), meta=meta)


def at_the_bound(p: Publisher, posts: Posts, clock: FakeClock) -> None:
    p.step()
    p.hold_for_other_primary_until(clock.now + TIMINGS.other_primary_wait)
    while Event.OTHER_PRIMARY_WAIT_OVER not in posts.events():
        clock.now = p.step() or clock.now


def test_at_the_bound_the_others_whose_session_is_gone_travel_with_the_wait_over() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, HealthRead((
        HealthEntry(OWNED, "n1", ("v1",), ("passing",)),
        primary_with_meta(STALE, "n3", session="dead"),
        primary_with_meta(OTHER, "n2", session="alive"),
        primary_with_meta("_nomad-task-a4-db", "n4", session="dead"),  # Nomad's: never
        primary_with_meta("consul-leader-a5-db", "n5"),  # no session named: never
    )))
    # Asked in the order of the instance IDs (OTHER sorts first): past the grace, then again
    # at the bound (the eviction asked for at the grace was not carried out in this test).
    for _ in ("grace", "bound"):
        port.expect("session_gone", False, check=lambda c: c.args[0] == "alive")
        port.expect("session_gone", True, check=lambda c: c.args[0] == "dead")

    at_the_bound(p, posts, clock)

    assert posts.last().facts.stale_primaries == (("n3", STALE),)
    port.assert_done()


def test_past_a_short_grace_the_others_whose_session_is_gone_are_reported_once() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, HealthRead((
        HealthEntry(OWNED, "n1", ("v1",), ("passing",)),
        primary_with_meta(STALE, "n3", session="dead"))))
    p.step()
    seen_at = clock.now
    p.hold_for_other_primary_until(clock.now + TIMINGS.other_primary_wait)
    port.expect("session_gone", True, check=lambda c: c.args[0] == "dead")
    while Event.STALE_PRIMARY_SEEN not in posts.events():
        clock.now = p.step() or clock.now
        assert clock.now < seen_at + TIMINGS.other_primary_wait, "not before the bound"
    assert clock.now >= seen_at + TIMINGS.stale_primary_grace
    assert posts.last().facts.stale_primaries == (("n3", STALE),)
    for _ in range(3):  # still listed (not evicted in this test): asked once per request
        clock.now = p.step() or clock.now
    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.STALE_PRIMARY_SEEN]
    port.assert_done()


def test_an_other_primary_with_a_live_session_is_left_to_the_bounded_wait() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, HealthRead((
        HealthEntry(OWNED, "n1", ("v1",), ("passing",)),
        primary_with_meta(OTHER, "n2", session="alive"))))
    port.expect("session_gone", False, check=lambda c: c.args[0] == "alive")  # the grace
    port.expect("session_gone", False, check=lambda c: c.args[0] == "alive")  # the bound

    at_the_bound(p, posts, clock)

    assert posts.events() == [Event.OTHER_PRIMARY_SEEN, Event.OTHER_PRIMARY_WAIT_OVER]
    assert posts.last().facts.stale_primaries == ()
    port.assert_done()


def test_a_session_lookup_that_fails_proves_nothing() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, HealthRead((
        HealthEntry(OWNED, "n1", ("v1",), ("passing",)),
        primary_with_meta(STALE, "n3", session="dead"))))
    for _ in ("grace", "bound"):
        port.expect("session_gone", ConsulUnavailable("no cluster leader", status=500))

    at_the_bound(p, posts, clock)

    assert Event.STALE_PRIMARY_SEEN not in posts.events()

    assert posts.last().facts.stale_primaries == ()
    port.assert_done()


def test_told_to_evict_it_deregisters_from_the_catalog_before_publishing_and_counts_it(
        caplog: pytest.LogCaptureFixture) -> None:
    p, port, posts, clock = publisher()
    evicted: list[None] = []
    p._on_evicted = lambda: evicted.append(None)
    primary_setup(p, port, posts, clock, health((OWNED, ("v1",), True)))
    port.expect("catalog_deregister", None, check=lambda c: c.args == ("n3", STALE))
    port.expect("service_register", None, check=owned_body(["v1", "primary"], "s1"))

    p.evict_stale_primaries((("n3", STALE),))
    p.publish_over_other_primary()
    p.step()

    assert evicted == [None]
    assert posts.events()[-1] is Event.PRIMARY_PUBLISHED
    error = next(r for r in caplog.records if r.levelname == "ERROR")
    assert (getattr(error, "instance", None), getattr(error, "node", None)) == ("n3", STALE)[::-1]
    port.assert_done()


def test_a_failed_eviction_is_retried_and_a_denied_one_is_not() -> None:
    p, port, posts, clock = publisher()
    evicted: list[None] = []
    p._on_evicted = lambda: evicted.append(None)
    primary_setup(p, port, posts, clock, health((OWNED, ("v1",), True)))
    port.expect("catalog_deregister", ConsulUnavailable("no cluster leader", status=500))
    port.expect("catalog_deregister", ConsulDenied("Permission denied", status=403))
    port.always("service_register", None)
    p.evict_stale_primaries((("n3", STALE), ("n2", OTHER)))

    due = p.step()

    assert due is not None and due > clock.now  # the failed one is tried again
    clock.now = due
    port.expect("catalog_deregister", None, check=lambda c: c.args == ("n3", STALE))
    p.step()
    assert evicted == [None]
    assert [c.args for c in port.calls if c.method == "catalog_deregister"] == [
        ("n3", STALE), ("n2", OTHER), ("n3", STALE)]
    port.assert_done()


def test_an_eviction_still_to_retry_is_dropped_when_the_leader_steps_down() -> None:
    p, port, posts, clock = publisher()
    primary_setup(p, port, posts, clock, health((OWNED, ("v1",), True)))
    port.expect("catalog_deregister", ConsulUnavailable("no cluster leader", status=500))
    port.always("service_register", None)
    p.evict_stale_primaries((("n3", STALE),))
    clock.now = p.step() or clock.now

    p.publish(Role.REPLICA, "s1", clock.now + TIMINGS.ttl)
    p.step()

    assert [c.method for c in port.calls].count("catalog_deregister") == 1
    port.assert_done()
