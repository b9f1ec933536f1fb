"""Every metric the Grafana dashboard uses is exported by a live sidecar.

One sidecar beside a Nomad-like task runs against the stand-in and becomes leader; its /metrics
is scraped until every metric name the dashboard's queries and variables use is among the
sample names (a histogram's `_bucket`, `_sum` and `_count` are sample names of their own), or
the deadline passes. The watch wait is 1 s so blocking queries return, and are counted, soon.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import running_group, wait_for
from tests.unit.test_grafana_dashboard import load_dashboard, metrics_used

pytestmark = pytest.mark.slow

SCRAPE_DEADLINE = 15.0
SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{| )", re.MULTILINE)


def sample_names(port: int) -> set[str]:
    reply = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    reply.raise_for_status()
    return set(SAMPLE_NAME.findall(reply.text))


def test_every_metric_of_the_dashboard_is_exported(consul: Any, tmp_path: Path) -> None:
    used = metrics_used(load_dashboard())
    with running_group(consul, tmp_path, nodes=["n1"], ttl="3s", sleep="1",
                       extra_env={"CONSUL_LEADER_WATCH_WAIT": "1s"}) as group:
        (sidecar,) = group.sidecars
        group.wait_single_primary(timeout=5.0)
        missing: set[str] = set(used)

        def all_exported() -> bool:
            missing.clear()
            missing.update(used - sample_names(sidecar.status_port))
            return not missing

        try:
            wait_for(all_exported, SCRAPE_DEADLINE, "every dashboard metric on /metrics")
        except AssertionError as exc:
            raise AssertionError(f"not exported by a live sidecar: {sorted(missing)}") from exc
