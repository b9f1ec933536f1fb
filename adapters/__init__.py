"""Everything that touches the outside world: Consul, files, hooks, HTTP, metrics."""
