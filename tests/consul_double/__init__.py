"""A Consul agent and server stand-in, served over real HTTP on loopback.

    from tests.consul_double import ConsulDouble, TlsConfig

See cluster.py for the interface and /work/shared/consul-semantics.md for the
behaviour it reproduces.
"""

from .cluster import ConsulDouble, TlsConfig
from .store import ClusterState

__all__ = ["ClusterState", "ConsulDouble", "TlsConfig"]
