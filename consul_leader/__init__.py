"""consul-leader: a leader-election sidecar for services on Consul and Nomad.

The repository keeps the machine and the adapters as the top-level folders `fsm/` and
`adapters/`; they install as `consul_leader.fsm` and `consul_leader.adapters`, so the wheel puts
no generic top-level name into site-packages. In a checkout, `consul_leader/fsm` and
`consul_leader/adapters` are links to those folders, so the same import names work unbuilt.
"""
