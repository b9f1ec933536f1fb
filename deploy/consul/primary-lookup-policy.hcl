# Consul ACL policy for clients (and operators) that look the primary up:
#   GET /v1/health/service/postgres?tag=primary&passing   (or DNS primary.postgres.service.consul)
# Health answers are filtered by both service:read and node:read, so both are needed; without
# node:read the answer is silently empty. Not part of the sidecar's own policy
# (consul-leader-policy.hcl), which never reads the catalog.
service "postgres" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
