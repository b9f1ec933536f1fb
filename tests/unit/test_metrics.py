"""Metrics adapter: names, pre-initialized series, truth from the first scrape, promtool lint."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from consul_leader.adapters.observability.metrics import (
    ACQUIRE_RESULTS,
    HOOK_NAMES,
    HOOK_RESULTS,
    RENEW_FAILURE_REASONS,
    TAG_WRITE_RESULTS,
    Metrics,
)

# An independent copy of the machine's vocabulary (DESIGN.md §2), so these tests do not depend
# on fsm/ and would notice if the adapter silently assumed something about it.
STATES = ["NoSession", "Follower", "Candidate", "Leader"]
EVENTS = ["session_created", "session_lost", "lease_expired", "lock_acquired", "lock_delayed",
          "lock_held_by_us", "lock_held_by_other", "lock_free", "key_missing", "shutdown"]
TRANSITIONS = [
    ("NoSession", "Candidate", "session_created"),
    ("Candidate", "Leader", "lock_acquired"),
    ("Candidate", "Follower", "lock_held_by_other"),
    ("Follower", "Candidate", "lock_free"),
    ("Leader", "Leader", "lock_held_by_us"),
    ("Leader", "Candidate", "key_missing"),
    ("Leader", "NoSession", "lease_expired"),
    ("Follower", "NoSession", "session_lost"),
    ("Leader", "NoSession", "shutdown"),
]
# A path of transitions from NoSession that ends in each state.
PATH_TO = {
    "NoSession": [],
    "Candidate": [("NoSession", "Candidate", "session_created")],
    "Leader": [("NoSession", "Candidate", "session_created"),
               ("Candidate", "Leader", "lock_acquired")],
    "Follower": [("NoSession", "Candidate", "session_created"),
                 ("Candidate", "Follower", "lock_held_by_other")],
}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_metrics(registry: CollectorRegistry, clock: FakeClock | None = None,
                 process_collectors: bool = False) -> Metrics:
    return Metrics(registry, states=STATES, initial_state="NoSession", transitions=TRANSITIONS,
                   events=EVENTS, version="1.2.3", revision="0123abc",
                   process_collectors=process_collectors, clock=clock or FakeClock())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def state_of(registry: CollectorRegistry) -> list[str]:
    return [s for s in STATES
            if value(registry, "consul_leader_state", state=s) == 1]


def transitions_count(registry: CollectorRegistry, source: str, dest: str,
                      event: str) -> float | None:
    return registry.get_sample_value("consul_leader_transitions_total",
                                     {"from": source, "to": dest, "event": event})


# -- truth from the first scrape -------------------------------------------------------------

def test_first_scrape_shows_initial_state_and_not_leader(registry: CollectorRegistry) -> None:
    make_metrics(registry)

    assert state_of(registry) == ["NoSession"]
    assert value(registry, "consul_leader_is_leader") == 0
    assert value(registry, "consul_leader_leader_since_timestamp_seconds") == 0
    assert value(registry, "consul_leader_last_renew_timestamp_seconds") == 0
    assert value(registry, "consul_leader_fencing_token") == 0


def test_initial_state_other_than_first_is_reported(registry: CollectorRegistry) -> None:
    # Enum defaults to its first state; the adapter must not rely on that.
    Metrics(registry, states=["Leader", "NoSession"], initial_state="NoSession", transitions=[],
            events=[], version="x", process_collectors=False)

    assert value(registry, "consul_leader_state", state="NoSession") == 1
    assert value(registry, "consul_leader_state", state="Leader") == 0


def test_unknown_initial_state_is_rejected(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="Lurking"):
        Metrics(registry, states=STATES, initial_state="Lurking", transitions=[], events=[],
                version="x", process_collectors=False)


# -- pre-initialized series ------------------------------------------------------------------

def test_every_known_transition_is_exported_at_zero(registry: CollectorRegistry) -> None:
    make_metrics(registry)

    for source, dest, event in TRANSITIONS:
        assert transitions_count(registry, source, dest, event) == 0


def test_every_state_event_pair_has_a_refusal_counter(registry: CollectorRegistry) -> None:
    make_metrics(registry)

    for state in STATES:
        for event in EVENTS:
            assert value(registry, "consul_leader_events_refused_total",
                         state=state, event=event) == 0


@pytest.mark.parametrize(("name", "label", "values"), [
    ("consul_leader_session_renew_failures_total", "reason", RENEW_FAILURE_REASONS),
    ("consul_leader_lock_acquire_attempts_total", "result", ACQUIRE_RESULTS),
    ("consul_leader_tag_writes_total", "result", TAG_WRITE_RESULTS),
])
def test_bounded_results_are_exported_at_zero(registry: CollectorRegistry, name: str, label: str,
                                              values: tuple[str, ...]) -> None:
    make_metrics(registry)

    assert values, "the bounded label set must not be empty"
    for label_value in values:
        assert value(registry, name, **{label: label_value}) == 0


def test_every_hook_and_result_is_exported_at_zero(registry: CollectorRegistry) -> None:
    make_metrics(registry)

    for hook in HOOK_NAMES:
        for result in HOOK_RESULTS:
            assert value(registry, "consul_leader_hook_runs_total", hook=hook, result=result) == 0


# -- transitions -----------------------------------------------------------------------------

def test_transition_is_counted_and_moves_the_state(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.transition("NoSession", "Candidate", "session_created")

    assert transitions_count(registry, "NoSession", "Candidate", "session_created") == 1
    assert state_of(registry) == ["Candidate"]
    assert value(registry, "consul_leader_is_leader") == 0


def test_becoming_leader_sets_is_leader_and_leader_since(registry: CollectorRegistry) -> None:
    clock = FakeClock(1_700_000_100.0)
    metrics = make_metrics(registry, clock)

    metrics.transition("NoSession", "Candidate", "session_created")
    metrics.transition("Candidate", "Leader", "lock_acquired")

    assert state_of(registry) == ["Leader"]
    assert value(registry, "consul_leader_is_leader") == 1
    assert value(registry, "consul_leader_leader_since_timestamp_seconds") == 1_700_000_100.0


def test_staying_leader_keeps_the_original_leader_since(registry: CollectorRegistry) -> None:
    clock = FakeClock(1_700_000_100.0)
    metrics = make_metrics(registry, clock)
    metrics.transition("Candidate", "Leader", "lock_acquired")

    clock.now += 60
    metrics.transition("Leader", "Leader", "lock_held_by_us")

    assert value(registry, "consul_leader_leader_since_timestamp_seconds") == 1_700_000_100.0
    assert transitions_count(registry, "Leader", "Leader", "lock_held_by_us") == 1


@pytest.mark.parametrize(("dest", "event"), [("NoSession", "lease_expired"),
                                             ("Candidate", "key_missing")])
def test_leaving_leader_clears_is_leader_and_leader_since(registry: CollectorRegistry, dest: str,
                                                          event: str) -> None:
    metrics = make_metrics(registry)
    metrics.transition("Candidate", "Leader", "lock_acquired")

    metrics.transition("Leader", dest, event)

    assert state_of(registry) == [dest]
    assert value(registry, "consul_leader_is_leader") == 0
    assert value(registry, "consul_leader_leader_since_timestamp_seconds") == 0


def test_transition_outside_the_table_is_still_counted(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.transition("Follower", "NoSession", "shutdown")

    assert transitions_count(registry, "Follower", "NoSession", "shutdown") == 1


def test_transition_to_unknown_state_is_rejected_and_not_counted(
        registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    with pytest.raises(ValueError, match="Lurking"):
        metrics.transition("NoSession", "Lurking", "session_created")

    assert transitions_count(registry, "NoSession", "Lurking", "session_created") is None
    assert state_of(registry) == ["NoSession"]


def test_refused_event_is_counted_per_state_and_event(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.refused("NoSession", "lock_acquired")
    metrics.refused("NoSession", "lock_acquired")

    assert value(registry, "consul_leader_events_refused_total",
                 state="NoSession", event="lock_acquired") == 2
    assert value(registry, "consul_leader_events_refused_total",
                 state="Follower", event="lock_acquired") == 0


# -- Consul and session ----------------------------------------------------------------------

def test_consul_request_is_counted_by_status_code(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.consul_request("PUT", "/v1/session/renew/:id", 200, 0.004)
    metrics.consul_request("PUT", "/v1/session/renew/:id", 404, 0.003)

    for code in ("200", "404"):
        assert value(registry, "consul_leader_consul_requests_total", method="PUT",
                     endpoint="/v1/session/renew/:id", code=code) == 1
    assert value(registry, "consul_leader_consul_request_duration_seconds_count",
                 method="PUT", endpoint="/v1/session/renew/:id") == 2


def test_consul_transport_failure_has_code_error(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.consul_request("GET", "/v1/kv/:key", None, 1.5)

    assert value(registry, "consul_leader_consul_requests_total", method="GET",
                 endpoint="/v1/kv/:key", code="error") == 1


def test_a_watch_is_measured_apart_from_requests(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.consul_request("GET", "/v1/kv/:key", 200, 0.002)
    metrics.consul_request("GET", "/v1/kv/:key", 200, 299.0, watch=True)
    metrics.consul_request("GET", "/v1/kv/:key", None, 12.0, watch=True)

    assert value(registry, "consul_leader_consul_request_duration_seconds_count",
                 method="GET", endpoint="/v1/kv/:key") == 1
    assert value(registry, "consul_leader_consul_requests_total", method="GET",
                 endpoint="/v1/kv/:key", code="200") == 1
    assert value(registry, "consul_leader_consul_watch_duration_seconds_count",
                 endpoint="/v1/kv/:key") == 2
    assert value(registry, "consul_leader_consul_watches_total", endpoint="/v1/kv/:key",
                 code="200") == 1
    assert value(registry, "consul_leader_consul_watches_total", endpoint="/v1/kv/:key",
                 code="error") == 1


def test_a_watch_that_runs_out_its_wait_lands_in_a_finite_bucket(
        registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    # The default 5m wait plus Consul's jitter (up to wait/16) ends by 318.75 s.
    metrics.consul_request("GET", "/v1/kv/:key", 200, 318.0, watch=True)
    metrics.consul_request("GET", "/v1/kv/:key", 200, 0.3, watch=True)

    bucket = "consul_leader_consul_watch_duration_seconds_bucket"
    assert value(registry, bucket, endpoint="/v1/kv/:key", le="300.0") == 1
    assert value(registry, bucket, endpoint="/v1/kv/:key", le="320.0") == 2


def test_request_latency_buckets_stop_at_ten_seconds(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.consul_request("PUT", "/v1/session/renew/:id", 200, 0.004)

    labels = {"method": "PUT", "endpoint": "/v1/session/renew/:id"}
    name = "consul_leader_consul_request_duration_seconds_bucket"
    assert value(registry, name, le="10.0", **labels) == 1
    assert value(registry, name, le="30.0", **labels) is None


def test_session_renewed_records_latency_and_timestamp(registry: CollectorRegistry) -> None:
    clock = FakeClock(1_700_000_200.0)
    metrics = make_metrics(registry, clock)

    metrics.session_renewed(0.003)

    assert value(registry, "consul_leader_session_renew_duration_seconds_count") == 1
    assert value(registry, "consul_leader_session_renew_duration_seconds_bucket", le="0.0025") == 0
    assert value(registry, "consul_leader_session_renew_duration_seconds_bucket", le="0.005") == 1
    assert value(registry, "consul_leader_last_renew_timestamp_seconds") == 1_700_000_200.0


def test_renew_histogram_spans_one_millisecond_to_ten_seconds(
        registry: CollectorRegistry) -> None:
    make_metrics(registry)

    assert value(registry, "consul_leader_session_renew_duration_seconds_bucket", le="0.001") == 0
    assert value(registry, "consul_leader_session_renew_duration_seconds_bucket", le="10.0") == 0


def test_session_renew_failure_is_counted_by_reason(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.session_renew_failed("not_found")

    assert value(registry, "consul_leader_session_renew_failures_total", reason="not_found") == 1
    assert value(registry, "consul_leader_session_renew_failures_total", reason="denied") == 0
    assert value(registry, "consul_leader_last_renew_timestamp_seconds") == 0


def test_acquire_tag_hook_and_fencing_are_recorded(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)

    metrics.acquire_attempt("lock_delay")
    metrics.tag_write("conflict")
    metrics.hook_run("demote", "timeout")
    metrics.fencing_token(42)

    assert value(registry, "consul_leader_lock_acquire_attempts_total", result="lock_delay") == 1
    assert value(registry, "consul_leader_tag_writes_total", result="conflict") == 1
    assert value(registry, "consul_leader_hook_runs_total", hook="demote", result="timeout") == 1
    assert value(registry, "consul_leader_fencing_token") == 42


@pytest.mark.parametrize("record", [
    lambda m: m.session_renew_failed("timeout"),
    lambda m: m.acquire_attempt("maybe"),
    lambda m: m.tag_write("partial"),
    lambda m: m.hook_run("restart", "ok"),
    lambda m: m.hook_run("promote", "crashed"),
], ids=["renew-reason", "acquire-result", "tag-result", "hook-name", "hook-result"])
def test_unknown_label_values_are_rejected(registry: CollectorRegistry,
                                           record: Callable[[Metrics], None]) -> None:
    metrics = make_metrics(registry)

    with pytest.raises(ValueError, match="expected one of"):
        record(metrics)


# -- metadata and collectors -----------------------------------------------------------------

def test_build_info_names_version_revision_and_python(registry: CollectorRegistry) -> None:
    make_metrics(registry)

    assert value(registry, "consul_leader_build_info", version="1.2.3", revision="0123abc",
                 python_version=platform.python_version()) == 1


def test_build_info_revision_is_unknown_unless_given(registry: CollectorRegistry) -> None:
    Metrics(registry, states=STATES, initial_state="NoSession", transitions=[], events=[],
            version="1.2.3", process_collectors=False)

    assert value(registry, "consul_leader_build_info", version="1.2.3", revision="unknown",
                 python_version=platform.python_version()) == 1


def test_process_collectors_are_on_the_injected_registry(registry: CollectorRegistry) -> None:
    make_metrics(registry, process_collectors=True)

    assert value(registry, "process_start_time_seconds") is not None
    assert b"\npython_info{" in generate_latest(registry)
    assert value(registry, "python_gc_collections_total", generation="0") is not None


def test_process_collectors_can_be_left_out(registry: CollectorRegistry) -> None:
    make_metrics(registry, process_collectors=False)

    assert value(registry, "process_start_time_seconds") is None


def test_two_instances_on_separate_registries_do_not_interfere() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    make_metrics(first).transition("Candidate", "Leader", "lock_acquired")
    make_metrics(second)

    assert value(first, "consul_leader_is_leader") == 1
    assert value(second, "consul_leader_is_leader") == 0


# -- conventions -----------------------------------------------------------------------------

def test_state_is_one_gauge_labelled_state(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry)
    metrics.transition("Candidate", "Leader", "lock_acquired")

    text = generate_latest(registry).decode()

    assert "# TYPE consul_leader_state gauge" in text
    assert 'consul_leader_state{state="Leader"} 1.0' in text
    assert 'consul_leader_state{state="NoSession"} 0.0' in text
    assert "consul_leader_state{consul_leader_state=" not in text


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text"])
def test_no_created_series_in_either_format(registry: CollectorRegistry, accept: str) -> None:
    metrics = make_metrics(registry, process_collectors=True)
    exercise_every_metric(metrics)
    encoder, _ = choose_encoder(accept)

    text = encoder(registry).decode()
    names = set(re.findall(r"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][\w:]*)", text, re.MULTILINE))

    assert "consul_leader_transitions_total" in names
    assert sorted(name for name in names if name.endswith("_created")) == []


# -- promtool --------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install it (Debian/Ubuntu: apt-get install "
                    "prometheus) - CI installs it, so this check must not be skipped")
    return path


def exercise_every_metric(metrics: Metrics) -> None:
    metrics.refused("NoSession", "lock_acquired")
    metrics.consul_request("PUT", "/v1/session/create", 200, 0.002)
    metrics.consul_request("GET", "/v1/kv/:key", None, 0.5)
    metrics.consul_request("GET", "/v1/kv/:key", 200, 30.0, watch=True)
    metrics.session_renewed(0.002)
    metrics.session_renew_failed("unavailable")
    metrics.acquire_attempt("acquired")
    metrics.tag_write("ok")
    metrics.fencing_token(7)
    metrics.hook_run("promote", "ok")


@pytest.mark.parametrize("state", STATES)
def test_exposition_passes_promtool_in_every_state(registry: CollectorRegistry,
                                                   state: str) -> None:
    binary = promtool()
    metrics = make_metrics(registry, process_collectors=True)
    exercise_every_metric(metrics)
    for source, dest, event in PATH_TO[state]:
        metrics.transition(source, dest, event)
    assert state_of(registry) == [state]

    result = subprocess.run([binary, "check", "metrics"], input=generate_latest(registry),
                            capture_output=True, timeout=30, check=False)

    problems = (result.stdout + result.stderr).decode()
    assert (result.returncode, problems) == (0, "")
