"""The leader-election state machine: pure, no I/O.

`LeaderMachine` decides; adapters observe Consul, turn what they see into `Event`s, and carry
out what the machine asks through the `Effects` port. `fsm` never imports an I/O library, a
clock, threads or processes (a test checks its import statements).
"""

from consul_leader.fsm.facts import NO_FACTS, Facts
from consul_leader.fsm.machine import Effects, LeaderMachine, Transition
from consul_leader.fsm.observation import KeyObservation, classify
from consul_leader.fsm.states import Event, State
from consul_leader.fsm.table import STATES, TRANSITIONS
from consul_leader.fsm.timing import Lease, Timings, lock_delay_wait, retry_delay

__all__ = [
    "NO_FACTS",
    "STATES",
    "TRANSITIONS",
    "Effects",
    "Event",
    "Facts",
    "KeyObservation",
    "LeaderMachine",
    "Lease",
    "State",
    "Timings",
    "Transition",
    "classify",
    "lock_delay_wait",
    "retry_delay",
]
