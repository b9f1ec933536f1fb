from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.consul_double import ConsulDouble
from tests.harness import Group, HealthObserver, dump_logs, running_group

# Short timings so a test takes seconds; TTL - SLEEP leaves 2 s for outages to be survived.
TTL = 3.0
SLEEP = 1.0


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble(
        nodes=("n1", "n2", "n3"), session_ttl_min=1.0, rpc_hold_timeout=0.5
    ) as double:
        yield double


# Sidecars run as allocations of the Nomad model (tests/nomad_double), whose clients sync
# their services every 2 x SLEEP (tests.harness.NomadGroup). A test about Consul alone asks
# for `@pytest.mark.parametrize("group", [CONSUL_ONLY], indirect=True)` and says why.
CONSUL_ONLY = {"nomad": False}

@pytest.fixture
def group(consul: ConsulDouble, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Group]:
    settings = getattr(request, "param", {})
    with running_group(
        consul, tmp_path, ttl=f"{TTL:g}s", sleep=f"{SLEEP:g}", **settings
    ) as running:
        yield running
        # Issue 4: /primary and /replica agree with the state at the end of every scenario.
        running.assert_role_endpoints()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(dump_logs(running))


@pytest.fixture
def observer(group: Group) -> Iterator[HealthObserver]:
    # Consul's health view and every sidecar's /primary and /replica, sampled all along.
    from tests.integration.support import role_endpoints_checked  # it imports our timings

    with HealthObserver(group, period=0.05) as watching, role_endpoints_checked(
        lambda: group.sidecars
    ):
        yield watching
    watching.assert_safe()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
