"""The acquirer with switchover hints and priorities on (issue 12), fuzzed with generated
Consul answers as tests/unit/test_fuzz_adapters.py does (`FUZZ_SEED=<n>` replays a run): it
never claims the lock without an answer showing it ours and never hot-loops, whatever the hint,
the peers' health and the lock answer. (Priority 0 sends nothing at all: a unit test says so.)"""

from __future__ import annotations

from consul_leader.adapters.election.acquirer import Acquirer, AcquirerSettings
from consul_leader.adapters.election.key import hint_key
from consul_leader.fsm import Event
from tests.adapter_testing import KEY, TIMINGS, Posts
from tests.unit.test_fuzz_adapters import (
    HOLDER,
    OURS,
    claimed_on_a_held_answer,
    drive,
    fuzzed,
)


def settings(priority: int) -> AcquirerSettings:
    return AcquirerSettings(KEY, HOLDER, TIMINGS, priority=priority, instance="a1", peers="db",
                            hint_key=hint_key(KEY))


def test_fuzz_acquirer_with_hints_and_priorities() -> None:
    transport, port, clock, rng = fuzzed(11)
    posts = Posts()
    acquirer = Acquirer(settings(2), port, posts, clock=clock)

    def checked() -> None:
        if posts.items and posts.last().event is Event.LOCK_ACQUIRED:
            claimed_on_a_held_answer(port)
        posts.clear()

    def instruct() -> None:
        choice = rng.random()
        if choice < 0.5:
            acquirer.campaign(OURS, after=rng.choice([0.0, 0.3]))
        elif choice < 0.7:
            acquirer.stand_down()
        elif choice < 0.85:
            acquirer.hand_over(OURS, rng.choice([None, "a2"]), rng.choice([0.0, 1.0]))
        else:
            acquirer.hold_off(clock.now + rng.choice([0.0, 2.0]))

    drive(transport, clock, rng, [acquirer.step], instruct, checked)

