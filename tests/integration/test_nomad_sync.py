"""Nomad in the loop, in situations the chaos suite does not stage: what the Nomad model's
own actions (a periodic sync, an allocation stop) do to the election Consul shows.

The sidecars are allocations of the Nomad model (tests.harness.NomadGroup), whose clients
sync the task services every 2 x SLEEP; the `observer` samples Consul's health view every
50 ms and fails a test on two passing primaries.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.harness import HealthObserver, NomadGroup, Sample, Sidecar, wait_for
from tests.integration.conftest import SLEEP

pytestmark = pytest.mark.slow


def owners(group: NomadGroup, sample: Sample) -> list[Sidecar | None]:
    return [group.owner({"ID": service_id}) for service_id in sample.primaries]


def replicas_labelled(group: NomadGroup, leader: Sidecar) -> bool:
    return all("replica" in s.labels() for s in group.sidecars if s is not leader)


def test_periodic_sync_while_settled_keeps_one_passing_primary(
        group: NomadGroup, observer: HealthObserver) -> None:
    leader = group.wait_single_primary(timeout=3.0)
    wait_for(lambda: replicas_labelled(group, leader), 3.0, "replica labels on the others")
    synced = time.monotonic()
    (record,) = group.sync_now("periodic", [leader.node])
    assert record.ok, record.error
    # What clients see over the next two renew intervals is the behaviour under test.
    time.sleep(2 * SLEEP)
    window = [s for s in observer.samples if s.at >= synced]
    assert len(window) >= 10, f"too few health samples to judge: {len(window)}"
    wrong = [(round(s.at - synced, 2), owners(group, s)) for s in window
             if owners(group, s) != [leader]]
    assert not wrong, (f"{len(wrong)} of {len(window)} samples after the sync without "
                       f"{leader.name} as the one passing primary, first: {wrong[:3]}; "
                       f"Consul now: {group.describe()}")


def test_allocation_stop_hands_over_within_a_second(group: NomadGroup,
                                                   observer: HealthObserver) -> None:
    """Nomad stops the leader's allocation: its main task first (the service deregistered
    before the kill signal), then SIGTERM to the sidecar, which releases the key."""
    old = group.wait_single_primary(timeout=3.0)
    stopping = threading.Thread(target=group.stop, args=(old,), daemon=True)
    started = time.monotonic()
    stopping.start()
    new = group.wait_single_primary(timeout=1.0, exclude=old)
    assert time.monotonic() - started <= 1.0
    stopping.join(10.0)
    assert not stopping.is_alive(), "the allocation stop did not finish"
    assert old.wait(timeout=1.0) == 0
    assert new.status()["state"] == "Leader"
    assert [s.name for s in group.leaders_by_status()] == [new.name]
