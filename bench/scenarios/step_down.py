"""Step-down lateness: Consul's servers go down; how late after its local lease deadline does
the leader take its labels off (in its own agent's view) and answer 503 on /primary?

The deadline is read from the leader's /status once the outage has begun, so no renew can
move it any more: `lease_remaining` added to the instant the /status request was *sent*
(the earliest the sidecar can have computed it, so lateness is never under-estimated). Two
readings a few milliseconds apart must agree, so a renew answered just before the outage is
not mistaken for the last one. Then the agent view (agent-local: it answers while the servers
are down) and /primary are polled every few milliseconds.

The baseline has no local deadline and no step-down: its run records whether its labels are
still there a whole TTL + 2 x SLEEP into the outage, and how its process ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from bench.fleet import Fleet, Kind
from bench.results import Env, Figure, Results
from bench.scenarios.common import NODES, STEADY_TIMEOUT, election
from tests.harness import Sidecar

POLL_PERIOD = 0.005  # the brief asks for at most 10 ms
AGREEMENT = 0.005  # two deadline readings this close are the same deadline
MIN_LEASE_LEFT = 0.5  # start an outage only with this much lease left, so it can be read


@dataclass(frozen=True)
class StepDown:
    labels_gone_at: float
    primary_503_at: float

    @property
    def done_at(self) -> float:
        return max(self.labels_gone_at, self.primary_503_at)


def lateness(env: Env, kind: Kind, runs: int, results: Results) -> None:
    figure = results.figure("step_down_lateness", kind, "s")
    with election(env, results, kind, "step-down") as (fleet, _watch):
        for run in range(runs):
            if kind is Kind.SIDECAR:
                _sidecar_run(env, fleet, figure, run)
            else:
                _baseline_run(env, fleet, figure)
    env.progress(f"step-down {kind.value}: {len(figure.samples)}/{runs} runs")


def _sidecar_run(env: Env, fleet: Fleet, figure: Figure, run: int) -> None:
    leader = _leader_with_lease(fleet)
    fleet.consul.servers_down()
    step = None
    try:
        deadline = _settled_deadline(leader)
        if deadline is not None:
            step = _watch_step_down(fleet, leader, deadline + env.timings.ttl)
    finally:
        fleet.consul.servers_up()
    if deadline is None or step is None:
        figure.missed(f"run {run}: deadline unreadable or no step-down in time")
    else:
        figure.add(step.done_at - deadline)
    fleet.wait_steady(STEADY_TIMEOUT)


def _baseline_run(env: Env, fleet: Fleet, figure: Figure) -> None:
    leader = fleet.await_primary(STEADY_TIMEOUT)
    timings = env.timings
    fleet.consul.servers_down()
    # The outage itself: as long as our sidecar's worst case (TTL) plus two of its polls.
    observed = timings.ttl + 2 * timings.sleep
    outage_end = time.monotonic() + observed
    ever_unlabelled = False
    while time.monotonic() < outage_end:
        tags = _agent_tags(leader)
        ever_unlabelled |= tags is not None and fleet.group.primary_label not in tags
        time.sleep(0.1)
    fleet.consul.servers_up()
    for member in fleet.group.sidecars:
        if member.exit_codes():
            member.stopped_by = "the outage"  # expected: the shell loop ends on a 500
    statuses = leader.exit_codes()
    figure.never = not ever_unlabelled
    figure.attempts += 1
    figure.notes.append(
        f"labels {'removed' if ever_unlabelled else 'still on'} {observed:g}s into the outage; "
        f"process {'exited with status ' + str(statuses[0]) if statuses else 'running'}"
    )
    for member in {id(m): m for m in [*fleet.members, leader]}.values():
        fleet.retire(member)
    for node in NODES:
        fleet.add(node)
    fleet.wait_steady(STEADY_TIMEOUT)


def _leader_with_lease(fleet: Fleet) -> Sidecar:
    """The primary, at a moment its lease has at least MIN_LEASE_LEFT seconds left."""
    deadline = time.monotonic() + STEADY_TIMEOUT
    while time.monotonic() < deadline:
        leader = fleet.primary()
        if leader is not None:
            left = leader.status().get("lease_remaining")
            if left is not None and left >= MIN_LEASE_LEFT:
                return leader
        time.sleep(0.05)
    raise RuntimeError(f"no primary with a lease to spare: {fleet.describe()}")


def _settled_deadline(leader: Sidecar) -> float | None:
    """The leader's lease deadline on our clock, once two readings agree."""
    previous: float | None = None
    for _ in range(20):
        sent = time.monotonic()
        left = leader.status().get("lease_remaining")
        if not left:
            return None  # already expired: the outage came too late to read it
        deadline = sent + float(left)
        if previous is not None and abs(deadline - previous) <= AGREEMENT:
            return min(deadline, previous)
        previous = deadline
        time.sleep(POLL_PERIOD)
    return None


def _watch_step_down(fleet: Fleet, leader: Sidecar, give_up_at: float) -> StepDown | None:
    """Poll the leader's agent view and /primary until both show it stepped down."""
    label = fleet.group.primary_label
    labels_gone_at: float | None = None
    primary_503_at: float | None = None
    while time.monotonic() < give_up_at:
        started = time.monotonic()
        tags = _agent_tags(leader)
        if labels_gone_at is None and tags is not None and label not in tags:
            labels_gone_at = time.monotonic()
        if primary_503_at is None and _primary_status(leader) == 503:
            primary_503_at = time.monotonic()
        if labels_gone_at is not None and primary_503_at is not None:
            return StepDown(labels_gone_at, primary_503_at)
        time.sleep(max(0.0, POLL_PERIOD - (time.monotonic() - started)))
    return None


def _agent_tags(instance: Sidecar) -> set[str] | None:
    """Tags on the instance's services in its own agent view; None when the agent does not
    answer."""
    try:
        services = instance.instances()
    except (requests.RequestException, ValueError, KeyError):
        return None
    return {tag for service in services for tag in service["Tags"]} if services else None


def _primary_status(instance: Sidecar) -> int | None:
    try:
        return instance.endpoint("/primary")
    except requests.RequestException:
        return None
