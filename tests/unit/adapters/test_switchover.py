"""The switchover request (issue 12) against a strict fake of the Consul port: what is refused
before anything moves, and what is posted to the machine when it is not."""

from __future__ import annotations

from consul_leader.adapters.consul.errors import ConsulUnavailable
from consul_leader.adapters.consul.port import HealthEntry, HealthRead
from consul_leader.adapters.election.switchover import Switchover, SwitchoverSettings
from consul_leader.fsm.facts import NO_FACTS, Facts
from consul_leader.fsm.states import Event, State
from tests.adapter_testing import TIMINGS, Posts, StrictPort

ALLOC = "6f67aa83-1e32-45c6-aa8c-38d96d80d81b"


def entry(instance: str, priority: int = 1, passing: bool = True) -> HealthEntry:
    return HealthEntry(f"consul-leader-{instance}-t", "n1", ("replica",),
                       ("passing",) if passing else ("critical",),
                       {"instance": instance, "alloc": instance, "priority": str(priority)})


class Setup:
    def __init__(self, state: State = State.LEADER, release: bool | None = True) -> None:
        self.port, self.posts = StrictPort(), Posts()
        self.state = state
        self.results: list[str] = []
        settings = SwitchoverSettings(instance="me", peers="db", timings=TIMINGS,
                                      default_hold_off=5.0, max_hold_off=60.0,
                                      answer_within=0.01)
        self.switchover = Switchover(settings, self.port, self.post, state=lambda: self.state,
                                     on_result=self.results.append)
        self._release = release

    def post(self, event: Event, reason: str = "", facts: Facts = NO_FACTS) -> None:
        self.posts(event, reason, facts)
        if self._release is not None:  # the machine and the acquirer, at once
            self.switchover.released(self._release)

    def peers(self, *entries: HealthEntry) -> Setup:
        self.port.expect("health_service", HealthRead(entries),
                         check=lambda c: c.args == ("db",))
        return self


def test_the_leader_posts_the_request_and_answers_once_the_key_is_released() -> None:
    s = Setup().peers(entry("me"), entry(ALLOC), entry("other", 0))
    answer = s.switchover.request(None, "2s")
    assert (answer.status, answer.result) == (200, "released")
    assert answer.document == {"switchover": "released", "from": "me", "to": None,
                               "hold_off": 2.0, "candidates": [ALLOC]}
    assert s.posts.events() == [Event.SWITCHOVER_REQUESTED]
    assert s.posts.last().facts == Facts(hold_off=2.0, target=None)
    assert s.results == ["released"]


def test_a_target_is_named_by_allocation_or_a_long_enough_prefix() -> None:
    for name in (ALLOC, ALLOC[:8], f"consul-leader-{ALLOC}-t"):
        s = Setup().peers(entry(ALLOC), entry("other"))
        answer = s.switchover.request(name, None)
        assert answer.status == 200 and answer.document is not None
        assert answer.document["to"] == ALLOC and answer.document["hold_off"] == 5.0
        assert s.posts.last().facts.target == ALLOC


def test_a_follower_refuses_without_asking_consul() -> None:
    s = Setup(state=State.FOLLOWER)
    answer = s.switchover.request(None, None)
    assert (answer.status, answer.result) == (409, "refused")
    assert answer.message == ("not the leader: this instance is Follower; send the switchover "
                              "to the leader")
    assert s.port.calls == [] and s.posts.items == []


def test_nobody_to_take_over_is_503() -> None:
    s = Setup().peers(entry("me"), entry("zero", 0), entry("sick", 2, passing=False))
    answer = s.switchover.request(None, None)
    assert answer.status == 503
    assert answer.message == ("no healthy candidate: no other passing instance of db with a "
                              "priority above 0")
    assert s.posts.items == []


def test_unknown_ambiguous_and_unfit_targets_are_refused() -> None:
    cases = {"nobody": 404, "abcdefgh": 404, "zero": 409, "sick": 409, "me": 409}
    for name, status in cases.items():
        s = Setup().peers(entry("abcdefgh-1"), entry("abcdefgh-2"), entry("zero", 0),
                          entry("sick", passing=False))
        if name == "me":
            s.port = StrictPort()  # refused before asking
            s.switchover._port = s.port
        answer = s.switchover.request(name, None)
        assert (answer.status, answer.result) == (status, "refused"), name
        assert "\n" not in answer.message and s.posts.items == []


def test_a_hold_off_out_of_bounds_or_garbled_is_400() -> None:
    for text in ("2m", "soon", "-1s"):
        s = Setup(state=State.LEADER)
        answer = s.switchover.request(None, text)
        assert (answer.status, answer.result) == (400, "invalid"), text
    assert Setup().peers(entry("x")).switchover.request(None, "1.5").document is not None


def test_consul_unreachable_is_503_and_nothing_moves() -> None:
    s = Setup()
    s.port.expect("health_service", ConsulUnavailable("no cluster leader"))
    answer = s.switchover.request(None, None)
    assert (answer.status, answer.result) == (503, "error") and s.posts.items == []


def test_a_release_still_under_way_is_202_and_a_lock_no_longer_ours_409() -> None:
    pending = Setup(release=None).peers(entry("x"))
    answer = pending.switchover.request(None, None)
    assert (answer.status, answer.result) == (202, "initiated")
    assert answer.document is not None and answer.document["state"] == "Leader"
    lost = Setup(release=False).peers(entry("x"))
    assert lost.switchover.request(None, None).status == 409
