# Consul ACL policy for the consul-leader sidecar of the `postgres` job
# (deploy/nomad/postgres-ha.nomad.hcl). Least privilege for what the sidecar sends; each rule
# lists the requests that need it. For another service, replace "postgres" in the key prefix
# and the service rule.
#
#   consul acl policy create -name consul-leader-postgres \
#     -rules @deploy/consul/consul-leader-policy.hcl
#
# With Nomad workload identity (Nomad >= 1.7) attach it to the role that your `nomad-tasks`
# binding rule gives the sidecar task's token (see deploy/nomad/README.md).
#
# Not granted, because the sidecar never asks for it: agent (it calls /v1/agent/self only when
# CONSUL_LEADER_NODE is set with health checks on, to check that it names the local agent's
# node; then add agent_prefix "" { policy = "read" }), node write, reads of other services,
# operator, acl, keyring, and write on any other key or service. Every rule below is needed:
# the tests remove each in turn and the sidecar then refuses to lead.
# Clients that look the primary up (health/service/postgres?tag=primary&passing) need read
# rules of their own: see primary-lookup-policy.hcl.

# The lock: PUT /v1/kv/consul-leader/postgres/lock?acquire=<session> and ?release=<session>,
# and GET of the same key (blocking on X-Consul-Index, and ?consistent before acting on it).
# The switchover hint beside it, consul-leader/postgres/lock.switchover: written (PUT) by a
# leader handing over, read (GET) by the candidates before they acquire (issue 12).
# Scoped to this service's folder: the token cannot touch another service's lock.
key_prefix "consul-leader/postgres/" {
  policy = "write"
}

# The session: PUT /v1/session/create, /v1/session/renew/<id>, /v1/session/destroy/<id>; and
# GET /v1/session/info/<id> of another instance's session (write includes read), to prove a
# passing primary stale before evicting it (below).
# Consul checks `session:write` on the *node* the session lives on, and a Nomad task can be
# placed on any client, so the rule must cover every node the job may run on.
# Trade-off: "" is simple and survives new nodes, but lets a leaked token renew or destroy any
# session in the datacenter it can find an ID for (it could force failovers of other locks,
# though never take them: key write stays scoped above). If your Nomad clients follow a naming
# scheme, narrow it, e.g. session_prefix "nomad-client-" { policy = "write" }.
session_prefix "" {
  policy = "write"
}

# The target services (the Nomad-registered postgres instances) and the instances the sidecar
# registers for them under the same name (ID consul-leader-<alloc>-<target id>):
#   GET /v1/agent/services (discovery; entries the token cannot read are silently dropped),
#   GET /v1/agent/service/<id> (blocking on ?hash= to notice Nomad re-registering a target),
#   PUT /v1/agent/service/register and /deregister/<id> (our instance, with its alias check
#     and its TTL check consul-leader:role:<target id>),
#   PUT /v1/agent/check/register, /v1/agent/check/pass/<id> (that TTL check, which keeps a
#     stale primary out of `?passing` answers; check writes need write on the check's service),
#   PUT /v1/catalog/deregister {Node, ServiceID} of another instance of this name still listed
#     as a passing primary after the bounded wait although its session is gone (its own
#     token was revoked, so its agent cannot unlist it): Consul's vetDeregisterWithACL asks
#     for service:write on the instance's name when the token has no node:write.
# With CONSUL_LEADER_PUBLISHED_NAME, grant write on that name too.
service "postgres" {
  policy = "write"
}

# The sidecar's own small service `consul-leader` (ID consul-leader-<alloc id>) with its TTL
# check consul-leader:lease:<alloc id>, which the session is bound to:
#   PUT /v1/agent/service/register, /v1/agent/check/pass/<id>,
#   PUT /v1/agent/service/deregister/<id> on shutdown.
service "consul-leader" {
  policy = "write"
}

# Before it labels itself primary, a new leader asks whether Consul still lists another
# passing primary (GET /v1/health/service/postgres?tag=primary&passing) and waits until it
# does not: this covers a key that changed hands behind the old leader's back. Health answers
# are filtered by node:read (service:read comes with the write rule above); without it the
# answer is silently empty, so the sidecar refuses to publish and says which rule is missing.
node_prefix "" {
  policy = "read"
}
