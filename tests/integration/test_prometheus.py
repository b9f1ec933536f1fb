"""A real Prometheus server scrapes three sidecars running against the stand-in.

Debian's `prometheus` binary runs on a free loopback port with a generated configuration: the
three sidecars' status ports as static targets (job `consul-leader`, label `service`, as the
shipped alert rules expect), 1 s scrape and evaluation intervals, and the shipped
`deploy/prometheus/alerts.yml` as its rule file. Every PromQL condition is polled with a
deadline, since scrapes and rule evaluations happen on Prometheus's own schedule.

The sidecars are allocations of the Nomad model. What must hold: `sum(consul_leader_is_leader)`
is 1 after the election and again after Nomad stops the leader's allocation (main task, then
SIGTERM to the sidecar), and it is then the new leader that reports 1; the transition counters
show the new leader's move to Leader; in steady state no alert is pending or firing; the
stopped sidecar brings ConsulLeaderSidecarDown to pending.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness import REPO, HealthObserver, NomadGroup, Sidecar, free_port, wait_for
from tests.integration.support import require_binary, role_endpoints_checked

pytestmark = pytest.mark.slow

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
JOB = "consul-leader"
STARTUP_TIMEOUT = 20.0
# Scrapes and evaluations run every second; a few rounds is plenty for any condition.
PROMQL_TIMEOUT = 10.0


@dataclass
class Prometheus:
    url: str

    def _get(self, path: str, **params: str) -> Any:
        reply = requests.get(f"{self.url}{path}", params=params, timeout=5)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def vector(self, promql: str) -> dict[str, float]:
        """An instant query's samples by `instance` label ('' for a sum without one)."""
        data = self._get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return {
            sample["metric"].get("instance", ""): float(sample["value"][1])
            for sample in data["result"]
        }

    def scalar(self, promql: str) -> float | None:
        """The single value of an aggregation, or None when the result is empty."""
        values = list(self.vector(promql).values())
        assert len(values) <= 1, values
        return values[0] if values else None

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert."""
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def rule_names(self) -> list[str]:
        groups = self._get("/api/v1/rules")["groups"]
        return sorted(rule["name"] for group in groups for rule in group["rules"])


def instance(sidecar: Sidecar) -> str:
    return f"127.0.0.1:{sidecar.status_port}"


def write_config(folder: Path, targets: list[str], service: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "900ms"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{
            "job_name": JOB,
            "static_configs": [{"targets": targets, "labels": {"service": service}}],
        }],
    }
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@contextlib.contextmanager
def running_prometheus(folder: Path, targets: list[str], service: str) -> Iterator[Prometheus]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(folder, targets, service)
    output = folder / "prometheus-output.txt"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [require_binary("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=folder,
        )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _ready(server, process, output), STARTUP_TIMEOUT, "Prometheus ready")
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(server: Prometheus, process: subprocess.Popen[bytes], output: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited {process.returncode}: "
                             f"{output.read_text(errors='replace')[-2000:]}")
    return requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200


def shipped_alert_names() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text())
    return sorted(rule["alert"] for group in document["groups"] for rule in group["rules"])


def leaders_reported(prometheus: Prometheus) -> list[str]:
    return sorted(prometheus.vector(f'consul_leader_is_leader{{job="{JOB}"}} == 1'))


def test_one_leader_in_prometheus_before_and_after_handover(
    group: NomadGroup, observer: HealthObserver, tmp_path: Path
) -> None:
    targets = [instance(s) for s in group.sidecars]
    with running_prometheus(tmp_path / "prometheus", targets, group.service) as prometheus, \
            role_endpoints_checked(lambda: group.sidecars) as probe:
        assert prometheus.rule_names() == shipped_alert_names()
        old = group.wait_single_primary(timeout=3.0)
        probe.expect(old, "Leader")
        wait_for(lambda: prometheus.scalar(f'count(up{{job="{JOB}"}} == 1)') == 3,
                 PROMQL_TIMEOUT, "all three sidecars scraped")
        wait_for(lambda: prometheus.scalar("sum(consul_leader_is_leader)") == 1
                 and leaders_reported(prometheus) == [instance(old)],
                 PROMQL_TIMEOUT, "sum(consul_leader_is_leader) == 1, from the leader")
        wait_for(lambda: prometheus.alerts() == [], PROMQL_TIMEOUT,
                 "no alert pending or firing in steady state")
        to_leader = 'sum by (instance) (consul_leader_transitions_total{to="Leader"})'
        before = prometheus.vector(to_leader)

        group.stop(old)
        new = group.wait_single_primary(timeout=3.0, exclude=old)
        probe.expect(new, "Leader")
        wait_for(lambda: prometheus.scalar("sum(consul_leader_is_leader)") == 1
                 and leaders_reported(prometheus) == [instance(new)],
                 PROMQL_TIMEOUT, "sum(consul_leader_is_leader) == 1 again, from the new leader")
        after = prometheus.vector(to_leader)
        assert before[instance(new)] == 0 and after[instance(new)] >= 1, (before, after)
        increase = prometheus.scalar(
            f'sum(increase(consul_leader_transitions_total'
            f'{{to="Leader",instance="{instance(new)}"}}[1m]))')
        assert increase is not None and increase > 0
        assert old.wait(timeout=5.0) == 0
        wait_for(lambda: _down_alert(prometheus, old), PROMQL_TIMEOUT,
                 "ConsulLeaderSidecarDown pending for the stopped sidecar")


def _down_alert(prometheus: Prometheus, sidecar: Sidecar) -> bool:
    return any(
        alert["labels"].get("alertname") == "ConsulLeaderSidecarDown"
        and alert["labels"].get("instance") == instance(sidecar)
        for alert in prometheus.alerts()
    )
