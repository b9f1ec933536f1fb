# Three PostgreSQL instances; the consul-leader sidecar beside each elects one of them and
# tags its Consul service "primary" (the others "replica"). Clients find the primary with
#   dig primary.postgres.service.consul
#   curl 'http://127.0.0.1:8500/v1/health/service/postgres?tag=primary&passing'
#
# Needs Nomad >= 1.7 (workload identity for the Consul token), Consul ACLs set up as in
# deploy/nomad/README.md, and the policy deploy/consul/consul-leader-policy.hcl.
#
# Replication itself (streaming from the primary, promoting a replica) is PostgreSQL's job, not
# the sidecar's: the sidecar only decides who leads and says so in Consul, in the leader file
# it writes to the shared alloc directory, and through optional promote/demote commands.

job "postgres" {
  type = "service"

  group "postgres" {
    # Three candidates: any one node can be lost and a leader remains electable.
    count = 3

    # One instance per client, so one lost node costs at most one member.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # Roll one allocation at a time: at most one election is caused by each step.
    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "30s"
      auto_revert      = true
    }

    # After Nomad deregisters the services (so new clients stop coming), give existing ones
    # this long before the tasks are signalled.
    shutdown_delay = "5s"

    network {
      # Bridge mode: the tasks of one allocation share a network namespace, so the sidecar's
      # promote/demote commands can reach PostgreSQL on 127.0.0.1.
      mode = "bridge"

      port "db" {
        to = 5432
      }

      # The sidecar's HTTP server (CONSUL_LEADER_LISTEN, default :9500).
      port "leader" {
        to = 9500
      }
    }

    # Data survives restarts on the same client. Each client declares a host_volume "pgdata"
    # in its agent configuration.
    volume "pgdata" {
      type      = "host"
      source    = "pgdata"
      read_only = false
    }

    task "postgres" {
      driver = "docker"

      config {
        image = "postgres:16-bookworm"
      }

      # PostgreSQL's "fast" shutdown on SIGINT: it disconnects clients and checkpoints.
      kill_signal  = "SIGINT"
      kill_timeout = "30s"

      volume_mount {
        volume      = "pgdata"
        destination = "/var/lib/postgresql/data"
      }

      env {
        PGDATA = "/var/lib/postgresql/data/pgdata"
      }

      # The superuser password comes from the Nomad variable nomad/jobs/postgres (key
      # "password"), which this job's workload identity may read by default.
      template {
        destination = "${NOMAD_SECRETS_DIR}/postgres.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/postgres" }}POSTGRES_PASSWORD={{ .password }}{{ end }}
        EOT
      }

      # The service the sidecar publishes the role for (its target). Its Consul ID is
      #   _nomad-task-<alloc id>-postgres-postgres-db   (task "postgres", service "postgres",
      # port "db"), which CONSUL_LEADER_SERVICE_IDS in the sidecar below names. The sidecar
      # registers its own instance of "postgres" beside it (consul-leader-<alloc id>-<that ID>,
      # tagged primary or replica, with an alias check on this service): Nomad's syncs never
      # touch it. Clients of "postgres" then see both; to see only the sidecar's instances, name
      # this service "postgres-task" and set CONSUL_LEADER_PUBLISHED_NAME = "postgres" (and
      # the IDs and the ACL policy accordingly).
      service {
        name = "postgres"
        port = "db"
        tags = ["postgres"]

        # Matters only with CONSUL_LEADER_PUBLISH = "labels" (the seed-compatible mode, which
        # tags this service itself): without it Nomad reverts the tags at every sync; with it
        # Nomad adopts them, but an operation sync can push stale ones back (see the README).
        enable_tag_override = true

        # With CONSUL_LEADER_HEALTH_GATE (below) this check decides who may lead: critical,
        # the leader hands over; a critical replica takes no part. Its flap damping is what
        # damps leadership changes too: Consul marks it critical only after 3 failures in a
        # row (up to 30 s of a dead postgres at this interval) and passing again only after 2
        # successes, so one lost probe moves nothing and a flapping instance does not come
        # back at once. (Consul applies these to the checks it runs itself, http, tcp, grpc;
        # not to TTL checks, which is how Nomad registers script checks.)
        check {
          name     = "postgres accepts connections"
          type     = "tcp"
          port     = "db"
          interval = "10s"
          timeout  = "2s"

          failures_before_critical = 3
          success_before_passing   = 2
        }
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }

    task "consul-leader" {
      driver = "docker"

      # A prestart sidecar starts before postgres and runs for the allocation's whole life.
      # At shutdown Nomad stops it last, after postgres, so it untags and releases the lock for
      # an instance that is really gone.
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        image = "ghcr.io/OWNER/consul-leader:0.1.0"
        # The image's HEALTHCHECK is for plain Docker; here the service check below decides.
        # `init = true` (tini as PID 1) is only needed if promote/demote commands leave
        # background processes behind: the sidecar handles SIGTERM itself.
      }

      # On SIGTERM the sidecar untags, releases the lock and destroys its session, which takes
      # up to about 4 s. Nomad's default of 5 s leaves too little margin before SIGKILL; a
      # SIGKILLed leader keeps the lock until its session TTL expires.
      kill_timeout = "10s"

      # Nomad >= 1.7 workload identity: the Nomad client logs this identity into Consul's
      # auth method and writes the resulting token to ${NOMAD_SECRETS_DIR}/consul_token (and
      # sets CONSUL_HTTP_TOKEN). Not needed when the servers set consul.task_identity.
      identity {
        name = "consul_default"
        aud  = ["consul.io"]
        ttl  = "1h"
      }

      # The Consul cluster (and namespace, on Enterprise) the task's token is for.
      consul {}

      env {
        # Inside the container 127.0.0.1 is not the host: reach the Consul agent on the
        # client's address. The agent's client_addr must include it.
        CONSUL_HTTP_ADDR = "http://${attr.unique.network.ip-address}:8500"

        # The workload-identity token. Read from the file rather than the environment because
        # the file wins, and the sidecar reads it again after a 403.
        CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/consul_token"

        # Names the lock key consul-leader/postgres/lock, which the ACL policy is scoped to.
        CONSUL_LEADER_SERVICE_NAME = "postgres"

        # Tag the one instance "primary" and the others "replica", so that clients can ask for
        # either (e.g. replica.postgres.service.consul for read-only traffic).
        CONSUL_LEADER_PRIMARY_LABEL = "primary"
        CONSUL_LEADER_REPLICA_LABEL = "replica"

        # Tag only the postgres service. By default the sidecar adopts every service of its
        # allocation, which would include postgres-consul-leader below.
        CONSUL_LEADER_SERVICE_IDS = "_nomad-task-${NOMAD_ALLOC_ID}-postgres-postgres-db"

        # Session TTL 15 s, renewed every 5 s: a Consul hiccup shorter than 10 s costs no
        # election, and a crashed sidecar loses its session (and the lock) after about 15 s.
        CONSUL_LEADER_TTL   = "15s"
        CONSUL_LEADER_SLEEP = "5"

        # After a session is lost (crash, node loss) nobody may take the lock for 5 s, so an
        # old primary that was cut off has time to notice before a new one appears. A clean
        # stop releases the lock and skips this wait.
        CONSUL_LEADER_LOCKDELAY = "5s"

        CONSUL_LEADER_LOG_LEVEL = "info"

        # Switchover (POST /switchover on the leader's port "leader", or
        #   consul-leader switchover --addr <leader's address> --token-file <file> [--to <alloc>]
        # from inside a task): on, and only with the bearer token the template below writes.
        CONSUL_LEADER_HTTP_WRITES     = "on"
        CONSUL_LEADER_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/http_token"

        # All three are equally eligible. To prefer some instances, or keep one from ever
        # leading (0: an instance in a DR site that only follows), give them their own group
        # or job with another value, e.g. from client metadata: "${meta.consul_leader_priority}".
        CONSUL_LEADER_PRIORITY = "1"

        # Health-aware leadership (opt-in): lead only while the postgres check above (and the
        # node's and the service's maintenance mode) pass. `consul maint -enable` on a node
        # moves leadership off it within a second. A failed check hands over after the 5 s
        # lock-delay above (Consul ends the session through its alias check, which imposes
        # it). Leave it off if a replica's check can fail merely because no primary exists
        # (then nobody would lead): see the README.
        CONSUL_LEADER_HEALTH_GATE = "true"
      }

      # The switchover bearer token, from the Nomad variable nomad/jobs/postgres (key
      # "switchover_token"). The sidecar reads the file again when it changes, so a new token
      # applies without a restart; an empty file (key missing) stops the sidecar at start
      # with an error naming CONSUL_LEADER_HTTP_TOKEN_FILE.
      template {
        destination = "${NOMAD_SECRETS_DIR}/http_token"
        perms       = "0400"
        change_mode = "noop"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/postgres" }}{{ .switchover_token }}{{ end }}
        EOT
      }

      # Lets Prometheus find every sidecar with consul_sd_configs (services: the name
      # below) and scrape /metrics.
      service {
        name = "postgres-consul-leader"
        port = "leader"
        tags = ["metrics"]

        meta {
          metrics_path = "/metrics"
        }

        # Liveness: fails only when the control loop is wedged, which a restart cures. A
        # leader cut off from Consul stays live (it steps down by itself at its lease
        # deadline), so a Consul outage never sets off a restart loop.
        check {
          name     = "consul-leader alive"
          type     = "http"
          path     = "/livez"
          interval = "10s"
          timeout  = "2s"

          # Restart the task after 3 failures in a row (30 s), not during its first 30 s.
          check_restart {
            limit = 3
            grace = "30s"
          }
        }

        # Readiness: a confirmed Consul session, and not a leader past its lease. It gates
        # the rolling update (update.health_check = "checks") and shows in Consul which
        # sidecars cannot reach it; it never restarts anything.
        check {
          name     = "consul-leader ready"
          type     = "http"
          path     = "/readyz"
          interval = "10s"
          timeout  = "2s"
        }
      }

      # About 35 MB resident when idle; Nomad's memory limit is a hard limit for docker.
      resources {
        cpu    = 50
        memory = 96
      }
    }
  }
}
