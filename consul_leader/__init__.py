"""consul-leader: a leader-election sidecar for services on Consul and Nomad.

The repository keeps the machine and the adapters as the top-level folders `fsm/` and
`adapters/`; they install as `consul_leader.fsm` and `consul_leader.adapters`, so the wheel puts
no generic top-level name into site-packages. In a checkout, `consul_leader/fsm` and
`consul_leader/adapters` are links to those folders, so the same import names work unbuilt.
"""

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]),
# `consul-leader --version` and the consul_leader_build_info metric print it, and the image
# build passes it as the org.opencontainers.image.version label (the Dockerfile's default is
# checked against it by tests/unit/test_packaging.py).
__version__ = "0.1.0"
