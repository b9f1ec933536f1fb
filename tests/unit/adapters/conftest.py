"""Adapter unit tests are fast by construction (a fake port, a fake clock, no sleeps): each
file must finish within a second of CPU time, or this fixture fails its last test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

FILE_BUDGET = 1.0  # seconds of CPU time for all the tests of one file


@pytest.fixture(scope="module", autouse=True)
def _file_budget(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.process_time()
    yield
    spent = time.process_time() - started
    assert spent < FILE_BUDGET, f"{request.module.__name__} took {spent:.2f}s of CPU time"
