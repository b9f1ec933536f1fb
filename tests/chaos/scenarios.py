"""The named fault scenarios of issue 5, items 1 to 11 (12 is fuzz.py, 13 is soak.py).

A scenario is data (what cluster it needs, what outcome DESIGN §6 promises) plus a script that
injects its faults through a `Run`. Every fault is marked on the timeline with the instant it
took effect, so detection and recovery are measured from there. `Run.hold` is the only place
that sleeps: it is the duration of a fault, never a wait for things to settle.

Timings keep production's ratios at a short scale (TTL 3 s, renew every 1 s), with the
default lock-delay of 0 s.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import requests

from tests.chaos import analysis, mutations
from tests.chaos.cluster import ChaosCluster, ClusterSettings, consul_only, register_like_nomad
from tests.chaos.known import KnownProblem
from tests.chaos.members import Member
from tests.chaos.proxy import Hook
from tests.chaos.timeline import FaultMark, TimelineEvent
from tests.harness import wait_for
from tests.nomad_double import NomadDouble
from tests.nomad_double.jobs import MAIN_TASK

BASE = ClusterSettings()  # Nomad in the loop
TTL, SLEEP, LOCK_DELAY = BASE.ttl, BASE.sleep, BASE.lock_delay
assert BASE.nomad is not None
NOMAD = BASE.nomad

# DESIGN §6 liveness bounds, in seconds, at these settings.
CRASH_BOUND = 2 * TTL + LOCK_DELAY + 1.0
GRACEFUL_BOUND = 1.0  # "about one round trip"; a second is the end-to-end suite's reading
QUICK_BOUND = LOCK_DELAY + 1.0  # node loss, key deleted, session destroyed
RELABEL_BOUND = 1.0  # DESIGN §3: labels put back within a second


@dataclass(frozen=True)
class Detection:
    """How the detection column is measured for a scenario."""

    kind: str  # "reaction", "restore", "measured" or "none"
    meaning: str


REACTION = Detection("reaction", "first state change of any sidecar, or change in Consul's "
                                 "list of passing primaries, after the fault")
RESTORE = Detection("restore", "from the end of the fault until Consul lists one live "
                               "primary again")
NO_REACTION = Detection("none", "none expected: leadership must not change")


@dataclass
class Run:
    """What a scenario script gets: the running cluster, the settled leader, and helpers that
    mark faults on the timeline."""

    cluster: ChaosCluster
    leader: Member
    measured_detection: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def settings(self) -> ClusterSettings:
        return self.cluster.settings

    @contextlib.contextmanager
    def instant(self, label: str, target: str | None = None) -> Iterator[FaultMark]:
        """An instantaneous fault, done in the body of the `with`; it is marked as starting
        before the body, because the sidecars may react before the body returns."""
        mark = FaultMark(label, time.monotonic(), None, target)
        yield mark
        self.cluster.timeline.mark(mark)

    @contextlib.contextmanager
    def lasting(self, label: str, target: str | None = None, *,
                ambiguous_for: str | None = None,
                cut_off: str | None = None) -> Iterator[FaultMark]:
        """A fault in force for the body of the `with`; mark it after it took effect.
        `cut_off`: the sidecar that cannot hear Consul meanwhile (see analysis)."""
        mark = FaultMark(label, 0.0, None, target, ambiguous_for, cut_off=cut_off)
        yield mark
        mark.end = time.monotonic()
        self.cluster.timeline.mark(mark)

    @staticmethod
    def begun(mark: FaultMark) -> None:
        """Call right after the fault took effect (inside `lasting`)."""
        mark.start = time.monotonic()

    @staticmethod
    def hold(seconds: float) -> None:
        time.sleep(seconds)  # the fault's own duration, not a wait for anything to settle


Script = Callable[[Run], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    item: int  # the issue's fault number
    title: str
    script: Script
    detection: Detection = REACTION
    bound: float | None = CRASH_BOUND
    bound_from: str = "start"  # "start" or "end" of the last fault
    same_leader: bool = False
    new_term: bool = False  # the fault ends the leader's term (see analysis.recovered_at)
    settings: ClusterSettings = BASE
    ci: bool = False
    # Set when today's sidecar is known to fail this scenario (see known.py). The run is
    # still judged in full.
    expected_failure: KnownProblem | None = None


# -- 1-3: signals to the leader ---------------------------------------------------------------


def sigkill_leader(run: Run) -> None:
    with run.instant("SIGKILL", run.leader.name):
        run.cluster.signal(run.leader, signal.SIGKILL)


def sigterm_leader(run: Run) -> None:
    with run.instant("SIGTERM", run.leader.name):
        run.cluster.signal(run.leader, signal.SIGTERM)


def sigstop_leader(ttls: float) -> Script:
    def script(run: Run) -> None:
        with run.lasting(f"SIGSTOP {ttls:g}xTTL", run.leader.name) as mark:
            run.cluster.signal(run.leader, signal.SIGSTOP)
            run.begun(mark)
            run.hold(ttls * TTL)
            run.cluster.signal(run.leader, signal.SIGCONT)

    return script


# -- 4: Consul servers down ---------------------------------------------------------------------


def servers_down(seconds: float) -> Script:
    def script(run: Run) -> None:
        with run.lasting(f"servers down {seconds:g}s") as mark:
            run.cluster.consul.servers_down()
            run.begun(mark)
            run.hold(seconds)
            run.cluster.consul.servers_up()

    return script


# -- 5: a node's agent unreachable; a node lost ------------------------------------------------


def agent_unreachable(run: Run) -> None:
    proxy = run.cluster.proxies[run.leader.node]
    with run.lasting("agent unreachable", run.leader.node, cut_off=run.leader.name) as mark:
        proxy.refuse()
        run.begun(mark)
        run.hold(2 * TTL)
        proxy.accept()


def node_lost(run: Run) -> None:
    node, proxy = run.leader.node, run.cluster.proxies[run.leader.node]
    with run.lasting("node lost", node, cut_off=run.leader.name) as mark:
        run.cluster.consul.fail_node(node)
        proxy.refuse()  # the sidecar's agent is gone with its node
        run.begun(mark)
        run.hold(2 * TTL)
        run.cluster.consul.recover_node(node)
        proxy.accept()


# -- 6-7: slow Consul, 5xx bursts, a server leader failover ------------------------------------


def slow_consul(run: Run) -> None:
    consul = run.cluster.consul
    with run.lasting(f"latency {0.3 * TTL:g}s") as mark:
        for node in run.settings.node_names:
            consul.set_latency(0.3 * TTL, node)
        run.begun(mark)
        run.hold(3 * TTL)
        for node in run.settings.node_names:
            consul.set_latency(0.0, node)


BURST = 10


def error_bursts(run: Run) -> None:
    consul, node = run.cluster.consul, run.leader.node
    for status in (500, 502, 503):
        with run.lasting(f"{status} x{BURST}", node) as mark:
            spent_at = consul.request_count(node) + BURST
            consul.inject_errors(node, BURST, status)
            run.begun(mark)
            # The burst lasts until the sidecar has spent it (the stand-in counts, then fails).
            wait_for(lambda: consul.request_count(node) >= spent_at,  # noqa: B023 - used here
                     3 * TTL, "the burst of errors to be answered")
        run.hold(1.0)  # the gap between bursts is part of the fault pattern


def consul_failover(run: Run) -> None:
    with run.instant("server leader failover 0.5s"):
        run.cluster.consul.servers_failover(window=0.5)


# -- 8: the lock key and the session tampered with ---------------------------------------------


def session_destroyed(run: Run) -> None:
    session = run.leader.status()["session"]
    with run.instant("session destroyed", run.leader.name):
        run.cluster.api("PUT", f"/v1/session/destroy/{session}").raise_for_status()


def key_deleted(run: Run) -> None:
    with run.instant("key deleted"):
        run.cluster.api("DELETE", f"/v1/kv/{run.cluster.kv_path}").raise_for_status()


def key_deleted_leader_cut_off(run: Run) -> None:
    """The key deleted while the leader cannot hear its agent: it cannot learn it lost the
    lock, so its label and role check must not outlive the new leader's arrival."""
    proxy = run.cluster.proxies[run.leader.node]
    with run.lasting("agent unreachable", run.leader.node, cut_off=run.leader.name) as mark:
        proxy.refuse()
        run.begun(mark)
        with run.instant("key deleted"):
            run.cluster.api("DELETE", f"/v1/kv/{run.cluster.kv_path}").raise_for_status()
        run.hold(2 * TTL)
        proxy.accept()


def key_overwritten(run: Run) -> None:
    before = run.cluster.kv_entry()
    assert before is not None
    with run.instant("key overwritten by a plain PUT") as mark:
        run.cluster.api("PUT", f"/v1/kv/{run.cluster.kv_path}",
                        data=b"garbage").raise_for_status()

    def written_back() -> bool:
        entry = run.cluster.kv_entry()
        return entry is not None and entry.get("Value") == before.get("Value")

    wait_for(written_back, 2.0, "the leader's value written back")
    run.measured_detection = time.monotonic() - mark.start
    after = run.cluster.kv_entry()
    if after is None or after.get("Session") != before.get("Session"):
        run.problems.append("the key changed hands after a plain PUT")


def key_overwritten_then_handover(run: Run) -> None:
    """A plain PUT, then a graceful handover: the next leader's fencing token must be higher."""
    key_overwritten(run)
    with run.instant("SIGTERM", run.leader.name):
        run.cluster.signal(run.leader, signal.SIGTERM)


# -- 9: Nomad re-registers the target service --------------------------------------------------
# Done by hand, as Nomad's sync would, in the Consul-only setting: with Nomad in the loop a
# hand-made registration drops Nomad's own check (Nomad registers it again critical at its next
# sync), a state Nomad never makes; there, scenario 20 (client restart) has Nomad re-register.


def reregistered_without_labels(run: Run) -> None:
    leader = run.leader
    with run.instant("re-registered without labels", leader.name):
        register_like_nomad(leader.agent, leader.target_service_id, run.settings.service,
                            leader.target_port, token=run.cluster.management_token)


def deregistered_and_registered(run: Run) -> None:
    leader, token = run.leader, run.cluster.management_token
    headers = {"X-Consul-Token": token} if token else {}
    with run.lasting("deregistered, registered again", leader.name) as mark:
        requests.put(f"{leader.agent}/v1/agent/service/deregister/{leader.target_service_id}",
                     headers=headers, timeout=5).raise_for_status()
        run.begun(mark)
        run.hold(0.5)  # Nomad's gap between the two calls during a task restart
        register_like_nomad(leader.agent, leader.target_service_id, run.settings.service,
                            leader.target_port, token=token)


# -- 10: the ACL token revoked, then a new one in the token file -------------------------------


def acl_token_revoked(run: Run) -> None:
    cluster, leader = run.cluster, run.leader
    with run.instant("token revoked", leader.name):
        cluster.revoke_token(leader)
    try:
        wait_for(lambda: cluster.live_primary() not in (None, leader), CRASH_BOUND + 1.0,
                 "another sidecar to take over")
    except AssertionError as exc:  # judged like the rest; the new token is written anyway
        run.problems.append(f"no other live primary after the revocation: {exc}")
    with run.instant("new token in the file", leader.name):
        cluster.issue_new_token(leader)


# -- 11: a proxy rewriting X-Consul-Index, truncating or corrupting bodies ---------------------


def rewrite_index(kind: str) -> Script:
    def script(run: Run) -> None:
        mutation = mutations.index_rewrite(kind)
        with run.lasting(f"X-Consul-Index {kind}") as mark:
            for proxy in run.cluster.proxies.values():
                proxy.set_hook(mutation.apply)
            run.begun(mark)
            run.hold(2 * TTL)
        for proxy in run.cluster.proxies.values():
            proxy.set_hook(None)

    return script


def mangle_leader_bodies(label: str, hook: Callable[[], Hook]) -> Script:
    def script(run: Run) -> None:
        proxy = run.cluster.proxies[run.leader.node]
        with run.lasting(label, run.leader.name, ambiguous_for=run.leader.name,
                         cut_off=run.leader.name) as mark:
            proxy.set_hook(hook())
            run.begun(mark)
            run.hold(2 * TTL)
        proxy.set_hook(None)

    return script


# -- 14-21: Nomad in the loop (issue 10) -------------------------------------------------------


def _nomad(run: Run) -> NomadDouble:
    nomad = run.cluster.nomad
    if nomad is None:
        raise RuntimeError("this scenario needs Nomad in the loop (settings.nomad)")
    return nomad


def _sync_period(run: Run) -> float:
    assert run.settings.nomad is not None
    return run.settings.nomad.sync_period


def _await_periodic_sync(run: Run, member: Member) -> None:
    """Let the next periodic sync on the member's node pass: under enable_tag_override it
    adopts the tags Consul holds (the leader's primary label) into Nomad's stored copy."""
    service_client = _nomad(run).client(member.node).service_client
    service_client.wait_for_sync(time.monotonic(), 2 * _sync_period(run) + 1.0, "periodic")


def _operations_sync(run: Run, member: Member) -> None:
    with run.instant(f"operations sync on {member.node}", member.name):
        _nomad(run).client(member.node).service_client.sync_now("operations")


def _await_nomad_restart(run: Run, member: Member) -> None:
    """Nomad starts the exited sidecar task again after the restart delay; mark it."""
    run.cluster.restart(member)
    run.cluster.timeline.record_event(TimelineEvent(
        time.monotonic(), "Nomad restarted the task", (member.name,), "sidecar task"))


STEADY_PERIODS = 5
STEADY_SECONDS = STEADY_PERIODS * NOMAD.sync_period


def steady_state(run: Run) -> None:
    """No fault at all for several sync periods: only Nomad's periodic syncs happen."""
    with run.lasting(f"no fault for {STEADY_SECONDS:g}s") as mark:
        run.begun(mark)
        run.hold(STEADY_SECONDS)


HANDOVER_ATTEMPTS = 3


def operation_sync_after_handover(run: Run) -> None:
    """The leader hands over while its sidecar lives on (its session destroyed: it demotes
    itself), then an operation on its node makes Nomad push its stored copy, whose tags a
    periodic sync adopted while it led."""
    old = run.leader
    for _ in range(HANDOVER_ATTEMPTS):
        _await_periodic_sync(run, old)
        old_term = run.cluster.term(old)
        session = old.status()["session"]
        with run.instant("leader's session destroyed (handover)", old.name):
            run.cluster.api("PUT", f"/v1/session/destroy/{session}").raise_for_status()
        if run.cluster.wait_settled(CRASH_BOUND + 1.0, old_term) is not old:
            break
    else:
        run.problems.append(f"{old.name} won the lock back {HANDOVER_ATTEMPTS} times: "
                            "no handover to test")
        return
    _operations_sync(run, old)


def sigkill_leader_restarted(run: Run) -> None:
    old = run.leader
    with run.instant("SIGKILL", old.name):
        run.cluster.signal(old, signal.SIGKILL)
    _await_nomad_restart(run, old)


def sigterm_leader_restarted(run: Run) -> None:
    """The leader's sidecar alone restarts (SIGTERM, Nomad starts it again after the
    restart delay), with one operation sync on its node in between."""
    old = run.leader
    _await_periodic_sync(run, old)
    old_term = run.cluster.term(old)
    with run.instant("SIGTERM", old.name):
        run.cluster.signal(old, signal.SIGTERM)
    run.cluster.wait_settled(GRACEFUL_BOUND + CRASH_BOUND, old_term)
    _operations_sync(run, old)
    _await_nomad_restart(run, old)


def stop_allocation_deaf_sidecar(run: Run) -> None:
    """`nomad alloc stop` on the leader's allocation, whose sidecar ignores SIGTERM: the
    main task is killed and its service deregistered, the sidecar gets SIGTERM, is
    SIGKILLed at kill_timeout, then the allocation's Consul tokens are revoked."""
    allocation = run.cluster.allocation_of(run.leader)
    with run.lasting("allocation stopped, sidecar deaf to SIGTERM", run.leader.name) as mark:
        run.begun(mark)
        allocation.stop()
    if not allocation.revoked_tokens:
        run.problems.append("the stopped allocation's tokens were not revoked")


def drain_leader_node(run: Run) -> None:
    """`nomad node drain` on the leader's node: its allocation is replaced on another node
    and stopped in Nomad's order (the mark starts when its tasks are killed)."""
    leader, nomad = run.leader, _nomad(run)
    allocation = run.cluster.allocation_of(leader)
    with run.lasting(f"node {leader.node} drained", leader.name) as mark:
        run.begun(mark)
        nomad.drain(leader.node, deadline=DRAIN_DEADLINE)
        killed = [e.at for e in allocation.events if e.type == "killTasks"]
        if killed:
            mark.start = killed[0]
        else:
            run.problems.append("the drain did not stop the leader's allocation")


DRAIN_DEADLINE = 30.0  # `-deadline`: the rest is stopped at once after it


def nomad_client_restart(run: Run) -> None:
    """The Nomad agent on the leader's node restarts (1 s away): its tasks keep running; the
    new service client registers every service again from the jobspec."""
    node = run.leader.node
    with run.lasting(f"Nomad client on {node} restarted", run.leader.name) as mark:
        run.begun(mark)
        _nomad(run).restart_client(node, downtime=1.0)


def leader_application_critical(run: Run) -> None:
    """The leader's application check (Nomad's script check) reports critical for 2 x TTL.
    Meanwhile its instance must not be listed as a passing primary (from one check interval
    after the fault on, when the check has run)."""
    allocation = run.cluster.allocation_of(run.leader)
    with run.lasting("leader's application check critical", run.leader.name) as mark:
        allocation.set_health("unhealthy", task=MAIN_TASK)
        run.begun(mark)
        run.hold(2 * TTL)
        allocation.set_health("healthy", task=MAIN_TASK)
    assert run.settings.nomad is not None
    checked_from = mark.start + run.settings.nomad.check_interval + analysis.SAMPLE_SLACK
    wait_for(lambda: run.cluster.observer.caught_up(mark.finished), 2.0, "the observer")
    listed = analysis.listed_between(run.cluster.timeline, run.leader.name, checked_from,
                                     mark.finished)
    if listed:
        run.problems.append(
            f"{run.leader.name} listed as a passing primary {listed:.2f}s while its "
            "application check was critical")


# -- the catalogue ----------------------------------------------------------------------------


def _catalogue() -> list[Scenario]:
    acl = replace(BASE, acl=True)
    lock_delay_ttl = replace(BASE, lock_delay=TTL)  # closes the cut-off window (README)
    return [
        Scenario("sigkill-leader", 1, "leader SIGKILL", sigkill_leader, ci=True, new_term=True),
        Scenario("sigterm-leader", 2, "leader SIGTERM", sigterm_leader, bound=GRACEFUL_BOUND,
                 ci=True, new_term=True),
        *(
            Scenario(f"sigstop-leader-{ttls:g}ttl", 3, f"leader SIGSTOP {ttls:g} x TTL, SIGCONT",
                     sigstop_leader(ttls), ci=ttls == 1.5)
            for ttls in (0.5, 1.0, 1.5, 3.0)
        ),
        Scenario("servers-down-short", 4, "servers down 0.8 x (TTL - SLEEP)",
                 servers_down(0.8 * (TTL - SLEEP)), ci=True, detection=NO_REACTION, bound=None,
                 same_leader=True),
        Scenario("servers-down-long", 4, "servers down TTL + 1 s", servers_down(TTL + 1.0),
                 bound_from="end"),
        Scenario("agent-unreachable", 5, "leader's agent refuses connections for 2 x TTL",
                 agent_unreachable, ci=True, new_term=True),
        Scenario("node-lost", 5, "leader's node lost for 2 x TTL", node_lost,
                 bound=QUICK_BOUND, ci=True, new_term=True),
        Scenario("node-lost-lockdelay-ttl", 5, "leader's node lost, lock-delay = TTL",
                 node_lost, bound=TTL + 1.0, new_term=True, settings=lock_delay_ttl, ci=True),
        Scenario("agent-unreachable-lockdelay-ttl", 5,
                 "leader's agent refuses connections, lock-delay = TTL", agent_unreachable,
                 bound=2 * TTL + TTL + 1.0, new_term=True, settings=lock_delay_ttl),
        Scenario("slow-consul", 6, "latency 0.3 x TTL on every request for 3 x TTL",
                 slow_consul, bound_from="end"),
        Scenario("5xx-bursts", 7, f"bursts of {BURST} x 500/502/503 at the leader's agent",
                 error_bursts, bound_from="end"),
        Scenario("consul-failover", 7, "Consul leader failover (0.5 s, timers restarted)",
                 consul_failover, ci=True, detection=NO_REACTION, bound=None, same_leader=True),
        Scenario("session-destroyed", 8, "leader's session destroyed by someone else",
                 session_destroyed, bound=QUICK_BOUND, ci=True, new_term=True),
        Scenario("key-deleted", 8, "lock key deleted", key_deleted, bound=QUICK_BOUND, ci=True,
                 new_term=True),
        Scenario("key-deleted-leader-cut-off", 8,
                 "lock key deleted while the leader's agent refuses connections",
                 key_deleted_leader_cut_off, new_term=True, ci=True),
        Scenario("key-overwritten", 8, "lock key overwritten by a plain PUT", key_overwritten,
                 detection=Detection("measured", "until the leader's value is written back"),
                 bound=None, same_leader=True, ci=True),
        Scenario("key-overwritten-then-handover", 8,
                 "lock key overwritten by a plain PUT, then the leader hands over (SIGTERM)",
                 key_overwritten_then_handover,
                 detection=Detection("measured", "until the leader's value is written back"),
                 bound=None, new_term=True, ci=True),
        Scenario("reregistered-without-labels", 9, "target service re-registered without labels",
                 reregistered_without_labels, detection=RESTORE, bound=RELABEL_BOUND, ci=True,
                 settings=consul_only(BASE)),
        Scenario("deregistered-and-registered", 9,
                 "target service deregistered, registered again 0.5 s later",
                 deregistered_and_registered, detection=RESTORE, bound=RELABEL_BOUND,
                 bound_from="end", settings=consul_only(BASE)),
        Scenario("acl-token-revoked", 10, "leader's ACL token revoked, then a new one written",
                 acl_token_revoked, settings=acl, ci=True, new_term=True),
        *(
            Scenario(f"proxy-index-{kind}", 11, f"X-Consul-Index {kind} on every answer",
                     rewrite_index(kind), ci=kind == "backwards", detection=NO_REACTION,
                     bound=None, same_leader=True)
            for kind in ("backwards", "zero", "missing", "garbage")
        ),
        Scenario("proxy-body-truncated", 11, "leader's answers truncated or cut mid-body",
                 mangle_leader_bodies("bodies truncated", mutations.truncated_bodies),
                 new_term=True),
        Scenario("proxy-body-corrupted", 11, "leader's answers corrupted",
                 mangle_leader_bodies("bodies corrupted",
                                      lambda: mutations.corrupted_bodies().apply),
                 ci=True, new_term=True),
    ]


def _nomad_catalogue() -> list[Scenario]:
    deaf_acl = replace(BASE, acl=True, nomad=replace(NOMAD, deaf_sidecar=True))
    return [
        Scenario("nomad-steady-state", 14,
                 f"no fault for {STEADY_PERIODS} sync periods ({STEADY_SECONDS:g} s: Nomad's "
                 "periodic syncs only)",
                 steady_state, detection=NO_REACTION, bound=None, same_leader=True, ci=True),
        Scenario("consul-only-steady-state", 14,
                 "no fault for as long, without Nomad (the control of the row above)",
                 steady_state, detection=NO_REACTION, bound=None, same_leader=True,
                 settings=consul_only(BASE)),
        Scenario("nomad-operation-sync-after-handover", 15,
                 "leader hands over (session destroyed), then an operation sync on its node",
                 operation_sync_after_handover, bound=QUICK_BOUND, new_term=True, ci=True),
        Scenario("nomad-sigkill-leader-restarted", 16,
                 "leader's sidecar SIGKILLed; Nomad restarts the task after the restart delay",
                 sigkill_leader_restarted, new_term=True),
        Scenario("nomad-sigterm-leader-restarted", 17,
                 "leader's sidecar alone restarted (SIGTERM, restart delay), one operation "
                 "sync in between", sigterm_leader_restarted, bound=GRACEFUL_BOUND,
                 new_term=True, ci=True),
        Scenario("nomad-alloc-stop-deaf-sidecar", 18,
                 "leader's allocation stopped, its sidecar ignores SIGTERM (SIGKILL at "
                 "kill_timeout, tokens revoked; ACLs on)", stop_allocation_deaf_sidecar,
                 bound=NOMAD.kill_timeout + CRASH_BOUND, new_term=True, settings=deaf_acl),
        Scenario("nomad-drain-leader-node", 19,
                 "leader's node drained (allocation replaced elsewhere, then stopped)",
                 drain_leader_node, bound=GRACEFUL_BOUND, new_term=True),
        Scenario("nomad-client-restart", 20,
                 "Nomad client on the leader's node restarted (1 s away)",
                 nomad_client_restart, detection=RESTORE, bound=RELABEL_BOUND,
                 bound_from="end", ci=True),
        Scenario("nomad-app-check-critical", 21,
                 "leader's application check critical for 2 x TTL",
                 leader_application_critical, detection=RESTORE,
                 bound=NOMAD.check_interval + RELABEL_BOUND, bound_from="end"),
    ]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [*_catalogue(), *_nomad_catalogue()]}
