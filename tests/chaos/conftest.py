"""The chaos suite runs a short subset by default (CI) and everything with `-m chaos_full`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos_full: part of the full chaos suite, run on demand with -m chaos_full")
    config.addinivalue_line(
        "markers", "chaos_ci: a chaos scenario that also runs by default (the CI subset)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without `-m ...chaos_full...`, keep only the CI subset of the chaos scenarios."""
    if "chaos_full" in (config.option.markexpr or ""):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        on_demand = item.get_closest_marker("chaos_full") and not item.get_closest_marker(
            "chaos_ci")
        (dropped if on_demand else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
