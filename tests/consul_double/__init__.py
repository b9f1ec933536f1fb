"""A Consul agent and server stand-in, served over real HTTP on loopback."""
