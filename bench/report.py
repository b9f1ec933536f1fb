"""The table `make bench` prints, the budgets it checks, and the JSON it writes.

Latency budgets are judged on p95 (the issue states p95 for the handover; the same statistic
is used for the others) and the verdict says when the max went over too. Each row shows, per
kind, median / p95 / max and the number of samples, and the ratio of the medians
(consul-leader / shell loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.fleet import Kind
from bench.results import Figure, Results
from bench.settings import Plan, Timings


@dataclass(frozen=True)
class Verdict:
    met: bool
    text: str


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    budget: str = ""
    judge: Callable[[Results, Timings], Verdict | None] | None = None


# -- budgets ----------------------------------------------------------------------------------


def latency_at_most(key: str, limit: Callable[[Timings], float]
                    ) -> Callable[[Results, Timings], Verdict | None]:
    def judge(results: Results, timings: Timings) -> Verdict | None:
        figure = results.get(key, Kind.SIDECAR)
        summary = figure.summary() if figure else None
        if figure is None or summary is None:
            return None
        bound = limit(timings)
        lost = figure.attempts - len(figure.samples)
        met = summary.p95 <= bound and lost == 0
        text = f"{'met' if met else 'MISSED'}: p95 {summary.p95:.3f} vs {bound:.3f}"
        if summary.max > bound:
            text += f"; max {summary.max:.3f} over"
        if lost:
            text += f"; {lost} run(s) without a takeover"
        return Verdict(met, text)

    return judge


def no_more_than_baseline(key: str) -> Callable[[Results, Timings], Verdict | None]:
    def judge(results: Results, timings: Timings) -> Verdict | None:
        ours, theirs = _medians(results, key)
        if ours is None or theirs is None:
            return None
        met = ours <= theirs
        return Verdict(met, f"{'met' if met else 'MISSED'}: {ours:.1f} vs {theirs:.1f}")

    return judge


def every_below(key: str, bound: float) -> Callable[[Results, Timings], Verdict | None]:
    def judge(results: Results, timings: Timings) -> Verdict | None:
        figure = results.get(key, Kind.SIDECAR)
        summary = figure.summary() if figure else None
        if summary is None:
            return None
        met = summary.max < bound
        return Verdict(met, f"{'met' if met else 'MISSED'}: max {summary.max:.3g} vs {bound:g}")

    return judge


ROWS: tuple[Row, ...] = (
    Row("handover: SIGTERM -> new passing primary", "handover", "p95 <= 0.3 s",
        latency_at_most("handover", lambda t: 0.3)),
    Row("crash: invalidation -> new passing primary", "crash_after_invalidation",
        "p95 <= 0.3 s", latency_at_most("crash_after_invalidation", lambda t: 0.3)),
    Row("crash: SIGKILL -> new passing primary", "crash_end_to_end",
        "p95 <= TTL+lock-delay+0.5 s",
        latency_at_most("crash_end_to_end", lambda t: t.ttl + t.lock_delay + 0.5)),
    Row("node loss: node failed -> new passing primary", "node_loss",
        "p95 <= lock-delay+0.3 s", latency_at_most("node_loss", lambda t: t.lock_delay + 0.3)),
    Row("  same, lock-delay 1s", "node_loss_lock_delay", "p95 <= 1s+0.3 s",
        latency_at_most("node_loss_lock_delay", lambda t: 1.0 + 0.3)),
    Row("step-down lateness after lease deadline", "step_down_lateness", "p95 <= 0.2 s",
        latency_at_most("step_down_lateness", lambda t: 0.2)),
    Row("Consul load, leader, server-bound", "load_leader_server", "<= baseline",
        no_more_than_baseline("load_leader_server")),
    Row("Consul load, leader, agent-local", "load_leader_agent"),
    Row("Consul load, follower, server-bound", "load_follower_server", "<= baseline",
        no_more_than_baseline("load_follower_server")),
    Row("Consul load, follower, agent-local", "load_follower_agent"),
    Row("steady state: no passing primary, % of the window", "steady_no_primary"),
    Row("RSS per process", "rss", "< 40 MB", every_below("rss", 40.0)),
    Row("CPU per process at steady state", "cpu_per_hour"),
    Row("idle CPU, % of one core", "cpu_percent", "< 0.5 %", every_below("cpu_percent", 0.5)),
    Row("scale N contenders: start-up until steady", "contention_startup"),
    Row("  CPU seconds per process by then", "contention_startup_cpu"),
    Row("  convergence: SIGTERM -> new primary", "contention_convergence"),
    Row("  burst: requests above steady rate", "contention_burst"),
    Row("scale G groups x 2: start-up until steady", "groups_startup"),
    Row("  CPU seconds per process by then", "groups_startup_cpu"),
    Row("  Consul load, all, server-bound", "groups_server"),
    Row("  Consul load, all, agent-local", "groups_agent"),
    Row("  server-bound per instance", "groups_server_each", "<= baseline",
        no_more_than_baseline("groups_server_each")),
    Row("  CPU of all instances, % of one core", "groups_cpu_percent"),
    Row("  RSS per process (median)", "groups_rss"),
)

_DECIMALS = {"s": 3, "req/min": 1, "MB": 1, "%": 3, "s/h": 2, "requests": 0}


def _medians(results: Results, key: str) -> tuple[float | None, float | None]:
    found = []
    for kind in Kind:
        figure = results.get(key, kind)
        summary = figure.summary() if figure else None
        found.append(summary.median if summary else None)
    return found[0], found[1]


def _number(value: float, unit: str) -> str:
    return f"{value:.{_DECIMALS.get(unit, 3)}f}"


def cell(figure: Figure | None) -> str:
    if figure is None:
        return "-"
    if figure.never:
        return "never"
    summary = figure.summary()
    if summary is None:
        return f"no sample ({figure.attempts} runs)"
    if summary.n == 1:
        return _number(summary.median, figure.unit)
    parts = " / ".join(_number(v, figure.unit) for v in (summary.median, summary.p95,
                                                         summary.max))
    return f"{parts} ({summary.n})"


def ratio(results: Results, key: str) -> str:
    ours, theirs = _medians(results, key)
    baseline = results.get(key, Kind.BASELINE)
    if baseline is not None and baseline.never:
        return "(never)"
    if ours is None or theirs is None or theirs <= 0:
        return "-"  # nothing to compare with (e.g. a burst the baseline does not have)
    return f"{ours / theirs:.3g}"


def _unit(results: Results, key: str) -> str:
    for kind in Kind:
        figure = results.get(key, kind)
        if figure is not None:
            return figure.unit
    return ""


def table(results: Results, timings: Timings, plan: Plan) -> tuple[str, list[dict[str, Any]]]:
    """The printed table and the verdicts, for rows that have any figure."""
    header = ("measure", "unit", "consul-leader med / p95 / max (n)",
              "shell loop med / p95 / max (n)", "ratio", "budget", "verdict")
    lines: list[tuple[str, ...]] = [header]
    verdicts: list[dict[str, Any]] = []
    for row in ROWS:
        ours, theirs = results.get(row.key, Kind.SIDECAR), results.get(row.key, Kind.BASELINE)
        if ours is None and theirs is None:
            continue
        verdict = row.judge(results, timings) if row.judge else None
        if verdict is not None:
            verdicts.append({"measure": row.label.strip(), "budget": row.budget,
                             "met": verdict.met, "verdict": verdict.text})
        label = row.label.replace("N contenders", f"{plan.scale_contenders} contenders")
        label = label.replace("G groups", f"{plan.scale_groups} groups")
        lines.append((label, _unit(results, row.key), cell(ours), cell(theirs),
                      ratio(results, row.key), row.budget, verdict.text if verdict else ""))
    safety_row, safety_verdict = _safety(results)
    lines.append(safety_row)
    if safety_verdict is not None:
        verdicts.append(safety_verdict)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
                .rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered), verdicts


SAFETY_LABEL = "runs with two passing primaries at once"


def _safety(results: Results) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The safety row (DESIGN §6: never two passing primaries) and its verdict."""
    counts = {}
    for kind in Kind:
        tallies = [t for (_, k), t in results.tallies.items() if k is kind]
        counts[kind] = (sum(t.with_two_primaries for t in tallies), sum(t.runs for t in tallies))
    cells = [f"{bad} of {runs}" if runs else "-" for bad, runs in counts.values()]
    bad, runs = counts[Kind.SIDECAR]
    if not runs:
        return (SAFETY_LABEL, "runs", cells[0], cells[1], "", "0", ""), None
    text = "met" if bad == 0 else f"MISSED: {bad} of {runs} runs"
    verdict = {"measure": SAFETY_LABEL, "budget": "0", "met": bad == 0, "verdict": text}
    return (SAFETY_LABEL, "runs", cells[0], cells[1], "", "0", text), verdict


def method_notes(timings: Timings, plan: Plan) -> list[str]:
    """How to read the table: what was measured, and what was not."""
    return [
        f"Both kinds get the same timings ({timings.describe()}: the seed's 15s/10 ratio, "
        "scaled down so 20 runs fit) and run the same way: as the prestart sidecar task of an "
        "allocation of the Nomad model, one per node, whose client syncs the main task's "
        f"service every {2 * timings.sleep:g} s (2 x SLEEP, Nomad's 30 s scaled) and restarts "
        f"a dead task after {timings.ttl:g} s (the TTL, as Nomad's 15 s beside a 15 s TTL).",
        "Consul load is the instances' own: Nomad's requests to the same agents (syncs, "
        "check heartbeats; counted by the model) are taken off.",
        "Shell loop = bench/baseline.py: consul.sh's requests, in its order, at its period. "
        "It is Python, so its footprint rows are the emulation's, not bash+curl+jq's.",
        "'New passing primary' is when Consul's health view (a blocking query through an "
        "observer node) first listed another instance: the change plus one loopback round trip.",
        "Step-down lateness: deadline = send time of a /status read during the outage + its "
        "lease_remaining (the earliest it can be); labels and /primary polled every 5-10 ms.",
        f"Steady Consul load counts requests in a {plan.steady_window:g} s window (so one "
        f"request more or less is {60 / plan.steady_window:g} req/min); it leaves out the "
        "sidecar's long-poll re-arms (its key and service watches answer at least every 5 min: "
        "at most 0.2 server-bound and 0.2 agent req/min).",
        "No passing primary: share of the steady window in which the health view listed "
        "none (Nomad's periodic syncs undo what the sidecar writes into Nomad's service: "
        "DESIGN section 7, issue 11).",
        "Scale burst: requests from the SIGTERM until one SLEEP after the new primary shows, "
        "above the steady rate. The sidecar reacts at once (every contender's watch answers and "
        "each tries to acquire), so its requests come together; the baseline instead reads the "
        "key with ?consistent every SLEEP, change or not.",
        f"Scale start-up: {plan.stagger:g} s between process starts on this machine; the CPU "
        "seconds are each process's total when the whole fleet was steady.",
    ]


def notes(results: Results) -> list[str]:
    lines = list(results.notes)
    for figure in results.figures.values():
        lines.extend(f"{figure.key} ({figure.kind.value}): {note}" for note in figure.notes)
    for scenario_kind, tally in sorted(results.tallies.items(),
                                       key=lambda item: (item[0][0], item[0][1].value)):
        scenario, kind = scenario_kind
        if not tally.with_two_primaries:
            continue
        spans = ", ".join(f"{seconds * 1000:.0f} ms" for seconds in tally.overlap_seconds)
        why = (" (the stopped leader keeps its label; each span ends when the benchmark "
               "deregisters its service, as Nomad would)" if kind is Kind.BASELINE else "")
        lines.append(f"two passing primaries, {scenario} ({kind.value}): "
                     f"{tally.with_two_primaries} of {tally.runs} runs, for {spans}{why}")
    return lines


def summary_json(results: Results) -> list[dict[str, Any]]:
    return [figure.to_json() for figure in results.figures.values()]
