# consul-leader: leader-election sidecar for services on Consul and Nomad.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t consul-leader:0.1.0 .
#
# Two stages: `build` turns the project and its dependencies into wheels; the runtime stage
# installs those wheels by file path with no index, so the image holds no compiler, no source
# tree and no pip cache, and installs exactly what the build stage resolved.
#
# The base is pinned by tag, which still moves with Python patch releases and Debian security
# updates. For production, pin by digest as well (python:3.12-slim-bookworm@sha256:...) and
# let a bot propose the updates.

FROM python:3.12-slim-bookworm AS build

WORKDIR /src
# Only what the wheel is built from; .dockerignore keeps the rest of the tree out of the
# build context.
COPY pyproject.toml README.md ./
COPY consul_leader/__init__.py consul_leader/__main__.py consul_leader/
COPY fsm/ fsm/
COPY adapters/ adapters/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .


FROM python:3.12-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/OWNER/consul-leader
LABEL org.opencontainers.image.title="consul-leader" \
      org.opencontainers.image.description="Leader-election sidecar for services on HashiCorp Consul and Nomad" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Unbuffered so log lines reach `nomad alloc logs` as they happen, even if the task is killed;
# no .pyc writes because site-packages belongs to root and the user below cannot write there.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A system user with a fixed numeric id: the numeric USER below works even where the host
# cannot resolve names (hadolint DL3066), and files the task writes into a shared alloc
# directory get an id operators can predict. --no-log-init keeps lastlog small for high ids.
RUN groupadd --system --gid 10001 consul-leader \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin consul-leader

# The wheels are bind-mounted from the build stage rather than copied, so they never become
# a layer of this image (RUN --mount needs BuildKit, the default builder since Docker 23).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl

USER 10001:10001

# /metrics, /healthz, /primary, /replica, /status (CONSUL_LEADER_LISTEN, default 0.0.0.0:9500).
EXPOSE 9500

# Nomad's docker driver stops a task with the image's STOPSIGNAL, then SIGKILLs it after
# kill_timeout (5 s by default). On SIGTERM the sidecar untags, releases the lock and destroys
# its session, then exits 0.
STOPSIGNAL SIGTERM

# Asks the sidecar itself; the port follows CONSUL_LEADER_LISTEN (default 9500). Python, not
# curl: the slim image has no curl and it is not worth adding for this. Nomad ignores image
# health checks for scheduling (its service `check` blocks decide) and can switch them off with
# `healthchecks { disable = true }`; with CONSUL_LEADER_LISTEN=off, run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('CONSUL_LEADER_LISTEN', '').rpartition(':')[2] or '9500'; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=3)"]

# Exec form, so the sidecar is PID 1 and receives SIGTERM itself. That is correct here because
# it installs its own SIGTERM and SIGINT handlers (Python as PID 1 would otherwise ignore
# SIGTERM). Its only children are the promote/demote hooks, which it waits for, so tini is
# not needed. If your hooks leave background processes behind, let an init reap them: set
# `init = true` in the Nomad docker driver config (or `docker run --init`) to run tini as PID 1.
ENTRYPOINT ["consul-leader"]
