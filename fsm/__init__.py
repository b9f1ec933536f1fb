"""The leader-election state machine: pure, no I/O.

`LeaderMachine` decides; adapters observe Consul, turn what they see into `Event`s, and carry
out what the machine asks through the `Effects` port. `fsm` never imports an I/O library, a
clock, threads or processes (a test checks its import statements).
"""

from fsm.machine import Effects, LeaderMachine, Transition
from fsm.observation import KeyObservation, classify
from fsm.states import Event, State
from fsm.table import STATES, TRANSITIONS
from fsm.timing import Lease, lock_delay_wait, retry_delay

__all__ = [
    "STATES",
    "TRANSITIONS",
    "Effects",
    "Event",
    "KeyObservation",
    "LeaderMachine",
    "Lease",
    "State",
    "Transition",
    "classify",
    "lock_delay_wait",
    "retry_delay",
]
