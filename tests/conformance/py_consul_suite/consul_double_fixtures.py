"""pytest plugin: py-consul's own fixtures, served by the Consul stand-in instead of Docker.

Loaded with `-p consul_double_fixtures` into a separate pytest run over the unchanged test
files of py-consul's sdist (see tests/conformance/test_py_consul_suite.py). Their root
conftest.py starts a `consul agent -dev` container per test and provides `consul_port`;
that conftest is left out (`--confcutdir`) and this plugin provides the same fixture: a
fresh stand-in per test whose only node is a leading server, as a dev agent is. The
stand-in is imported as the top-level package `consul_double` (its imports are all
relative), because py-consul's test package is itself named `tests`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from consul_double import ConsulDouble  # type: ignore[import-not-found]
from consul_double.views import CONSUL_VERSION  # type: ignore[import-not-found]

DEV_NODE = "consul-dev"  # not "n2": their session test expects node "n2" to be unknown


@pytest.fixture(autouse=True)
def _unset_consul_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """As their root conftest does: an ambient token must not reach the clients."""
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)


@pytest.fixture
def consul_port() -> Iterator[tuple[int, str]]:
    """(HTTP port, Consul version) of a fresh agent, like their Docker fixture."""
    with ConsulDouble(nodes=(DEV_NODE,), servers=(DEV_NODE,)) as double:
        port = int(double.node_addr(DEV_NODE).rsplit(":", 1)[1])
        yield port, CONSUL_VERSION
