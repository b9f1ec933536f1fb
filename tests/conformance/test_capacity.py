"""Capacity as behaviour: 200 concurrent blocking queries on one KV key, each on its own
connection, are all held, none ends on an unrelated write, and one write to the key ends
every one of them with the new value (consul-semantics.md §3). Correctness, not speed:
the requests-per-second figure is printed by `python -m tests.consul_double.bench`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.conftest import REAL_CONSUL_ADDR
from tests.consul_double import ConsulDouble
from tests.consul_double.bench import BlockingOutcome, BlockingProbe

CONCURRENT_QUERIES = 200

pytestmark = pytest.mark.skipif(bool(REAL_CONSUL_ADDR), reason="needs the Consul double")


@pytest.fixture(scope="module")
def outcome() -> Iterator[BlockingOutcome]:
    with ConsulDouble(nodes=("n1",)) as double:
        probe = BlockingProbe(double.node_addr("n1"), CONCURRENT_QUERIES,
                              double.blocked_queries)
        yield probe.run()
        assert double.blocked_queries() == 0


def test_every_blocking_query_is_held_at_once(outcome: BlockingOutcome) -> None:
    """§3: 200 queries with an index at the key's wait, all counted as blocked together."""
    assert outcome.failures == []
    assert outcome.held


def test_an_unrelated_write_ends_none_of_them(outcome: BlockingOutcome) -> None:
    """§3: a write to another key wakes nothing that watches this one."""
    assert outcome.returned_early == 0


def test_one_write_to_the_key_ends_every_query_with_the_new_value(
    outcome: BlockingOutcome,
) -> None:
    """§3: the write's index passes every query's: all 200 answer 200 with the new value."""
    assert outcome.woken_by_write == CONCURRENT_QUERIES
