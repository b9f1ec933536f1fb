"""Prometheus files in deploy/prometheus: rules, their promtool unit tests, the scrape config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from consul_leader.adapters.observability.metrics import Metrics

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE = PROMETHEUS_DIR / "scrape.yml"
JOB = "consul-leader"
METRICS_TAG = "consul-leader-metrics"

# Fields of consul_sd_config that every Prometheus 2.x release accepts (discovery/consul).
CONSUL_SD_FIELDS = {"server", "token", "datacenter", "tag_separator", "scheme", "username",
                    "password", "allow_stale", "refresh_interval", "services", "tags",
                    "node_meta", "tls_config"}
# Debian builds promtool without Consul service discovery ("Disable Consul SD until its Debian
# package is back in shape"); it then rejects the consul_sd_configs field itself.
NO_CONSUL_SD = "field consul_sd_configs not found"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found on PATH: install it (Debian/Ubuntu: apt-get install "
                    "prometheus) - CI installs it, so these checks must not be skipped")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]
            if "alert" in rule]


# -- rules -----------------------------------------------------------------------------------

def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [case for test in load(ALERTS_TEST)["tests"] for case in test["alert_rule_test"]]

    for rule in alert_rules():
        name = rule["alert"]
        own = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in own), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in own), f"{name}: no case where it is quiet"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_alerts_only_use_metrics_the_sidecar_exports() -> None:
    registry = CollectorRegistry()
    Metrics(registry, states=["NoSession", "Follower", "Candidate", "Leader"],
            initial_state="NoSession", transitions=[], events=[], version="test",
            process_collectors=False)
    exported = set(re.findall(r"^(consul_leader_\w+)", generate_latest(registry).decode(),
                              re.MULTILINE))

    used = {name for rule in alert_rules()
            for name in re.findall(r"consul_leader_\w+", rule["expr"])}

    assert used, "the rules should use the sidecar's metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_down_alert_selects_the_scrape_job() -> None:
    jobs = [job["job_name"] for job in load(SCRAPE)["scrape_configs"]]
    down = next(rule for rule in alert_rules() if rule["alert"] == "ConsulLeaderSidecarDown")

    assert jobs == [JOB]
    assert f'up{{job="{JOB}"}}' in down["expr"]


# -- scrape config ---------------------------------------------------------------------------

def test_scrape_config_passes_promtool_check() -> None:
    result = promtool("check", "config", str(SCRAPE))
    output = result.stdout + result.stderr

    if result.returncode != 0 and NO_CONSUL_SD in output:
        # This promtool cannot parse consul_sd_configs at all; the rest of the file is checked
        # by test_scrape_config_relabelling_gives_each_sidecar_its_group instead.
        assert output.count("not found in type") == 1, output
        warnings.warn("promtool was built without Consul SD; consul_sd_configs not validated "
                      "by promtool", stacklevel=1)
        return
    assert result.returncode == 0, output


def test_consul_sd_config_uses_known_fields_and_filters_on_the_tag() -> None:
    (job,) = load(SCRAPE)["scrape_configs"]

    for sd in job["consul_sd_configs"]:
        assert set(sd) <= CONSUL_SD_FIELDS, f"unknown fields: {sorted(set(sd) - CONSUL_SD_FIELDS)}"
        assert sd["server"]
        assert sd["tags"] == [METRICS_TAG]


def discovered_as_consul_would(tmp_path: Path, targets: list[dict[str, Any]]) -> Path:
    """scrape.yml with Consul SD swapped for file SD serving the same __meta_consul_* labels."""
    config = load(SCRAPE)
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    del job["consul_sd_configs"]
    targets_file = tmp_path / "targets.json"
    targets_file.write_text(json.dumps(targets))
    job["file_sd_configs"] = [{"files": [str(targets_file)]}]
    path = tmp_path / "scrape.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def consul_target(address: str, service: str, node: str, **meta: str) -> dict[str, Any]:
    labels = {"__meta_consul_service": service, "__meta_consul_node": node,
              "__meta_consul_dc": "dc1", "__meta_consul_service_id": f"{service}-{node}",
              "__meta_consul_tags": f",{METRICS_TAG},"}
    labels.update({f"__meta_consul_service_metadata_{k}": v for k, v in meta.items()})
    return {"targets": [address], "labels": labels}


def test_scrape_config_relabelling_gives_each_sidecar_its_group(tmp_path: Path) -> None:
    config = discovered_as_consul_would(tmp_path, [
        consul_target("10.0.0.5:25001", "db-leader-sidecar", "n1", consul_leader_service="db"),
        consul_target("10.0.0.6:25001", "db-leader-sidecar", "n2", consul_leader_service="db"),
        consul_target("10.0.0.7:25002", "cache", "n3"),
    ])
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    result = promtool("check", "service-discovery", str(config), JOB, "--timeout=2s")

    assert result.returncode == 0, result.stderr
    labels = {t["labels"]["instance"]: t["labels"] for t in json.loads(result.stdout)}
    assert {i: (t["service"], t["node"], t["job"]) for i, t in labels.items()} == {
        "10.0.0.5:25001": ("db", "n1", JOB),
        "10.0.0.6:25001": ("db", "n2", JOB),
        "10.0.0.7:25002": ("cache", "n3", JOB),  # no meta: the Consul service name
    }
    assert labels["10.0.0.5:25001"]["datacenter"] == "dc1"
    assert labels["10.0.0.5:25001"]["__metrics_path__"] == "/metrics"
