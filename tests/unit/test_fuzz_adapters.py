"""Each adapter fed 10,000 generated Consul answers (tests/fuzz_answers.py) through the real
`HttpConsul`, on a fake clock: no exception escapes, no hot loop (requests per fake second
stay bounded), and the lock is claimed only on an answer that showed it ours.

Seeded: set FUZZ_SEED to replay a run; every run uses a new seed otherwise, printed on failure.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from consul_leader.adapters.consul.http import HttpConsul
from consul_leader.adapters.consul.port import KeyRead, SessionSpec
from consul_leader.adapters.controller import Controller
from consul_leader.adapters.effects import Drivers, HubSettings, RoleEffects
from consul_leader.adapters.election.acquirer import Acquirer, AcquirerSettings
from consul_leader.adapters.election.health_gate import GateSettings, HealthGate
from consul_leader.adapters.election.key import LockHolder
from consul_leader.adapters.election.session import KeeperSettings, SessionKeeper
from consul_leader.adapters.election.watcher import LockWatcher, WatcherSettings
from consul_leader.adapters.publishing.checks import ChecksSettings, HealthChecks
from consul_leader.adapters.publishing.labels import Role, owned_service_id
from consul_leader.adapters.publishing.publisher import Publisher, PublisherSettings
from consul_leader.fsm import Event, LeaderMachine, State, Transition
from consul_leader.fsm.observation import KeyObservation
from tests.adapter_testing import KEY, TIMINGS, FakeClock, InlineExecutor, Posts
from tests.fuzz_answers import Answered, FuzzedConsul, busiest_second

ANSWERS = 10_000
# What a correct adapter may send in one second: a blocking loop answered at once is rate
# limited to 1 / min_watch_interval; the machine's instructions (at most every
# INSTRUCTION_GAP of fake time here) each cost a few requests.
INSTRUCTION_GAP = 0.25
HOT_LOOP = 1 / TIMINGS.min_watch_interval + 40
SPINS = 1_000  # steps in a row that want to run again at once without sending anything
SEED = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
OURS = "s-ours"
HOLDER = LockHolder(host="h1", service="db", alloc_id="a1")
TARGET = "_nomad-task-a1-db-db-db"


def fuzzed(offset: int) -> tuple[FuzzedConsul, ReadsRecorded, FakeClock, random.Random]:
    clock = FakeClock()
    transport = FuzzedConsul(SEED + offset, clock)
    return transport, ReadsRecorded(transport), clock, random.Random(SEED + offset)


def drive(transport: FuzzedConsul, clock: FakeClock, rng: random.Random,
          steps: list[Callable[[], float | None]], instruct: Callable[[], None],
          after_step: Callable[[], None] = lambda: None) -> None:
    """Run the steps as their workers would, until the answers are used up."""
    spins, instructed = 0, float("-inf")
    sent_by: list[list[float]] = [[] for _ in steps]  # request times, per step (worker)
    while transport.answers < ANSWERS:
        before = transport.answers
        dues = []
        for step, sent in zip(steps, sent_by, strict=True):
            ahead = transport.answers
            dues.append(step())
            sent += transport.times[ahead:]
        after_step()
        pending = [due for due in dues if due is not None]
        if transport.answers == before and pending and min(pending) <= clock.now:
            spins += 1
            assert spins < SPINS, f"seed {SEED}: a step keeps asking to run at once"
        else:
            spins = 0
        upcoming = min(pending, default=clock.now + rng.uniform(0.01, 0.5))
        clock.now = max(clock.now + 0.01 * (transport.answers == before), upcoming)
        if rng.random() < 0.2 and clock.now >= instructed + INSTRUCTION_GAP:
            instruct()
            instructed = clock.now
    busiest = max(busiest_second(times) for times in sent_by)
    assert busiest <= HOT_LOOP, f"seed {SEED}: {busiest} requests in one fake second"


class ReadsRecorded(HttpConsul):
    """The port, remembering the raw answer behind each key read it could use."""

    def __init__(self, transport: FuzzedConsul) -> None:
        super().__init__(transport)
        self.fuzzed = transport
        self.usable_reads: list[Answered] = []

    def kv_get(self, key: str, **options: Any) -> KeyRead:
        read = super().kv_get(key, **options)
        self.usable_reads.append(self.fuzzed.ledger[-1])
        return read


def claimed_on_a_held_answer(port: ReadsRecorded) -> None:
    """The latest key read the adapter could use answered with our session holding it."""
    assert port.usable_reads, f"seed {SEED}: no answer behind the claim"
    read = port.usable_reads[-1]
    assert read.status == 200 and isinstance(read.body, list) \
        and read.body[0].get("Session") == OURS, f"seed {SEED}: claimed the lock on {read}"


def test_fuzz_session_keeper() -> None:
    transport, port, clock, rng = fuzzed(1)
    posts = Posts()
    spec = SessionSpec(name="db", ttl="3s", lock_delay="0s", service_checks=("lease",))

    def new_keeper() -> SessionKeeper:
        settings = KeeperSettings(session=spec, kv_path=KEY, holder=HOLDER, timings=TIMINGS,
                                  node_to_verify="n1")
        return SessionKeeper(settings, port, posts, clock=clock)

    keepers = [new_keeper()]

    def instruct() -> None:
        keeper = keepers[-1]
        if keeper.fatal is not None:  # Consul "refused the TTL": a restarted process
            keepers.append(new_keeper())
        elif rng.random() < 0.7:
            keeper.create()
        else:
            keeper.give_up(posts.last().facts.session if posts.items else None)

    drive(transport, clock, rng, [lambda: keepers[-1].step()], instruct)
    created = [p for p in posts.items if p.event is Event.SESSION_CREATED]
    assert created and all(p.facts.session for p in created)
    assert all(p.facts.valid_until is not None for p in posts.items
               if p.event is Event.LEASE_RENEWED)


def test_fuzz_lock_watcher() -> None:
    transport, port, clock, rng = fuzzed(2)
    posts = Posts()
    watcher = LockWatcher(WatcherSettings(KEY, TIMINGS), port, posts, clock=clock)
    watcher.follow(OURS)

    def checked() -> None:
        if posts.items and posts.last().event is Event.LOCK_HELD_BY_US:
            claimed_on_a_held_answer(port)
            posts.clear()

    def instruct() -> None:
        watcher.confirm(OURS, max_age=TIMINGS.ttl)

    drive(transport, clock, rng, [watcher.watch_step, watcher.confirm_step], instruct, checked)


def test_fuzz_acquirer() -> None:
    transport, port, clock, rng = fuzzed(3)
    posts = Posts()
    acquirer = Acquirer(AcquirerSettings(KEY, HOLDER, TIMINGS), port, posts, clock=clock)
    acquired = 0

    def checked() -> None:
        nonlocal acquired
        if posts.items and posts.last().event in (Event.LOCK_ACQUIRED, Event.LOCK_HELD_BY_US):
            claimed_on_a_held_answer(port)
            if posts.last().event is Event.LOCK_ACQUIRED:
                last_acquire = transport.last_acquire()
                assert last_acquire is not None and last_acquire.body is True, SEED
                acquired += 1
            posts.clear()

    def instruct() -> None:
        choice = rng.random()
        if choice < 0.6:
            acquirer.campaign(OURS, after=rng.choice([0.0, 0.1, 1.0]))
        elif choice < 0.8:
            acquirer.stand_down()
        else:
            value = rng.choice([b"garbage", None, HOLDER.value(OURS)])
            acquirer.keep_value(OURS, KeyObservation(exists=True, session=OURS, value=value))

    drive(transport, clock, rng, [acquirer.step], instruct, checked)
    assert acquired > 0, f"seed {SEED}: never acquired: the fuzz explores too little"


def test_fuzz_publisher() -> None:
    transport, port, clock, rng = fuzzed(4)
    posts = Posts()
    settings = PublisherSettings(service_ids=(), alloc_id="a1", service_name="db",
                                 primary_label="primary", replica_label="replica",
                                 timings=TIMINGS, owner="a1")
    watched: list[str] = []
    publisher = Publisher(settings, port, posts, clock=clock, spawn_watch=watched.append)
    asked = {"role": Role.REPLICA, "valid_until": 0.0}

    def instruct() -> None:
        choice = rng.random()
        if choice < 0.4:
            asked["role"] = rng.choice([Role.PRIMARY, Role.REPLICA])
            asked["valid_until"] = clock.now + rng.choice([0.0, TIMINGS.ttl])
            publisher.publish(asked["role"], OURS, asked["valid_until"])
        elif choice < 0.6:
            publisher.extend(clock.now + TIMINGS.ttl)
            asked["valid_until"] = clock.now + TIMINGS.ttl
        elif choice < 0.8:
            publisher.hold_for_other_primary_until(clock.now + rng.uniform(0, 3))
        elif choice < 0.9:
            evict = ((rng.choice(["n1", "n2"]), rng.choice(EVICTABLE)),)
            told_to_evict.update(evict)
            publisher.evict_stale_primaries(evict)
        else:
            publisher.publish_over_other_primary()

    checked_up_to = 0
    told_to_evict: set[tuple[str, str]] = set()

    def primary_only_as_asked() -> None:
        nonlocal checked_up_to
        for answered in transport.ledger[checked_up_to:]:
            evicted_only_as_told(answered, told_to_evict)
            if answered.endpoint == "/v1/agent/service/register" and \
                    "primary" in (answered.sent or {}).get("Tags", []):
                assert asked["role"] is Role.PRIMARY, f"seed {SEED}: primary label unasked"
                assert clock.now < asked["valid_until"], f"seed {SEED}: primary past the lease"
        checked_up_to = transport.answers

    steps = [publisher.step, *[lambda t=t: publisher.watch_step(t) for t in SERVICE_TARGETS],
             lambda: publisher.watch_step(owned_service_id("a1", TARGET))]
    drive(transport, clock, rng, steps, instruct, primary_only_as_asked)


SERVICE_TARGETS = (TARGET,)
EVICTABLE = ("consul-leader-a2-_nomad-task-a2-db-db-db", "other")


def evicted_only_as_told(answered: Answered, told: set[tuple[str, str]]) -> None:
    """A catalog deregistration names an instance the machine told the publisher to evict."""
    if answered.endpoint == "/v1/catalog/deregister":
        sent = answered.sent or {}
        assert (sent.get("Node"), sent.get("ServiceID")) in told, \
            f"seed {SEED}: evicted what it was not told to"


def test_fuzz_publisher_at_the_bound_evicts_only_what_it_was_told() -> None:
    """Every request is past its bounded wait at once, so each sighting of another primary
    asks Consul about its session; what the wait-over names stale is then evicted."""
    transport, port, clock, rng = fuzzed(7)
    transport.other_primaries = 0.5
    posts = Posts()
    settings = PublisherSettings(service_ids=(TARGET,), alloc_id="a1", service_name="db",
                                 primary_label="primary", replica_label="replica",
                                 timings=TIMINGS, owner="a1")
    publisher = Publisher(settings, port, posts, clock=clock)
    told: set[tuple[str, str]] = set()
    seen = 0

    def instruct() -> None:
        nonlocal seen
        for item in posts.items[seen:]:
            if item.facts.stale_primaries:
                told.update(item.facts.stale_primaries)
                publisher.evict_stale_primaries(item.facts.stale_primaries)
        seen = len(posts.items)
        publisher.publish(Role.PRIMARY, OURS, clock.now + TIMINGS.ttl)
        publisher.hold_for_other_primary_until(clock.now - 1.0)
        if rng.random() < 0.1:
            publisher.publish_over_other_primary()

    checked_up_to = 0

    def only_told() -> None:
        nonlocal checked_up_to
        for answered in transport.ledger[checked_up_to:]:
            evicted_only_as_told(answered, told)
        checked_up_to = transport.answers

    drive(transport, clock, rng, [publisher.step], instruct, only_told)
    asked = sum(a.endpoint == "/v1/session/info/:id" for a in transport.ledger)
    evicted = sum(a.endpoint == "/v1/catalog/deregister" for a in transport.ledger)
    assert asked > 0 and evicted > 0, \
        f"seed {SEED}: asked {asked} sessions, evicted {evicted}: the fuzz explores too little"


def test_fuzz_health_checks() -> None:
    transport, port, clock, rng = fuzzed(5)
    posts = Posts()
    settings = ChecksSettings(enabled=True, instance="a1", service_name="db", kv_path=KEY,
                              ttl_text="3s", timings=TIMINGS, owner="a1")
    checks = HealthChecks(settings, port, posts, clock=clock, executor=InlineExecutor())
    checks.set_targets([TARGET, "_nomad-task-a1-db-db-other"])

    def instruct() -> None:
        if rng.random() < 0.3:
            checks.prepare_lease_check()
        else:
            checks.pass_round(lease=rng.random() < 0.8, roles=rng.random() < 0.5,
                              valid_until=clock.now + rng.choice([-1.0, TIMINGS.ttl]))

    drive(transport, clock, rng, [checks.step], instruct)


def test_fuzz_health_gate() -> None:
    """Whatever Consul answers, the gate reports only changes (or a recheck), never loops."""
    transport, port, clock, rng = fuzzed(7)
    posts = Posts()
    watched: list[str] = []
    gate = HealthGate(GateSettings(TIMINGS, alias_check_prefix="consul-leader:alias:"), port,
                      posts, clock=clock, spawn_watch=watched.append)

    def instruct() -> None:
        if rng.random() < 0.3:
            gate.set_targets(rng.choice([[TARGET], [TARGET, "_nomad-task-a1-db-db-other"]]))
        else:
            gate.recheck()

    def only_changes() -> None:
        events = posts.events()
        repeated = [a for a, b in itertools.pairwise(events)
                    if a is b is Event.APPLICATION_CRITICAL]
        assert repeated == [], f"seed {SEED}: the same critical verdict posted twice"

    drive(transport, clock, rng, [gate.step, lambda: gate.watch_step("db")], instruct,
          only_changes)
    assert posts.items, f"seed {SEED}: the gate never reported a verdict"


def test_fuzz_the_whole_sidecar_never_leads_without_a_confirmed_lock() -> None:
    transport, port, clock, rng = fuzzed(6)
    controller = Controller(heartbeat_period=TIMINGS.heartbeat_period,
                            wedged_after=TIMINGS.wedged_after, clock=clock)
    post = controller.post
    keeper = SessionKeeper(
        KeeperSettings(session=SessionSpec(name="db", ttl="3s", lock_delay="0s"), kv_path=KEY,
                       holder=HOLDER, timings=TIMINGS), port, post, clock=clock)
    watcher = LockWatcher(WatcherSettings(KEY, TIMINGS), port, post, clock=clock)
    acquirer = Acquirer(AcquirerSettings(KEY, HOLDER, TIMINGS), port, post, clock=clock)
    publisher = Publisher(PublisherSettings((TARGET,), "a1", "db", "primary", "replica",
                                            TIMINGS, owner="a1"), port, post, clock=clock)
    checks = HealthChecks(ChecksSettings(True, "a1", "db", KEY, "3s", TIMINGS, owner="a1"),
                          port, post, clock=clock, executor=InlineExecutor())
    leaderships: list[Transition] = []

    class Checked(RoleEffects):
        def enter_leader(self, t: Transition) -> None:
            observation = t.facts.observation
            assert observation is not None and observation.session == t.facts.session, (
                f"seed {SEED}: Leader without a confirmed lock: {t}")
            leaderships.append(t)
            super().enter_leader(t)

    class _Null:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: None

    effects = Checked(HubSettings(key="/" + KEY, timings=TIMINGS),
                      Drivers(keeper, acquirer, watcher, publisher, checks, _Null(), _Null(),
                              _Null()), clock=clock)
    controller.attach(LeaderMachine(effects))
    # Sessions the fuzz hands out are "s-ours" or "s-new"; only ours can be seen holding.
    steps = [keeper.step, watcher.watch_step, watcher.confirm_step, acquirer.step,
             publisher.step, lambda: publisher.watch_step(TARGET), checks.step]
    rng.shuffle(steps)
    drive(transport, clock, rng, steps, lambda: None, lambda: controller.run_pending() and None)
    states = {controller.state}
    assert states <= set(State)
    assert leaderships, f"seed {SEED}: never led: the fuzz explores too little"


@pytest.fixture(autouse=True)
def _say_the_seed(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("fuzz seed", SEED))
