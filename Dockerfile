# consul-leader: leader-election sidecar for services on Consul and Nomad.
#
#   VERSION="$(python3 -c 'import consul_leader; print(consul_leader.__version__)')"
#   docker build --build-arg VERSION="$VERSION" --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t consul-leader:"$VERSION" .
#
# VERSION comes from the one place it is written (consul_leader/__init__.py; the default below
# is kept equal to it by the tests); REVISION becomes the image's revision label and the
# `revision` label of consul_leader_build_info. BASE_IMAGE picks the Python base: the default
# is the official image; tests/image builds on a Debian base bootstrapped locally (Python 3.11,
# the project's minimum), since no registry is reachable there.
#
# Two stages: `build` turns the project into a wheel and downloads the runtime dependencies
# that requirements.lock pins, checking every file against the lock's hashes; the runtime stage
# installs those files by path with no index and `--require-hashes` again, so the image holds
# no compiler, no source tree and no pip cache, and exactly the locked versions.
#
# The base is pinned by tag, which still moves with Python patch releases and Debian security
# updates. For production, pin by digest as well (python:3.12-slim-bookworm@sha256:...) and
# let a bot propose the updates.

ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build

WORKDIR /src
# Only what the wheel is built from; .dockerignore keeps the rest of the tree out of the
# build context.
COPY requirements.lock requirements-build.lock pyproject.toml README.md LICENSE ./
COPY consul_leader/__init__.py consul_leader/__main__.py consul_leader/
COPY fsm/ fsm/
COPY adapters/ adapters/
# The wheel is built with the locked setuptools in a throw-away virtualenv (no build
# isolation, so nothing unhashed is fetched); the dependencies are downloaded, not built.
RUN python -m venv /tmp/build-venv \
 && /tmp/build-venv/bin/pip install --no-cache-dir --require-hashes -r requirements-build.lock \
 && /tmp/build-venv/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
      --wheel-dir /wheels . \
 && pip download --no-cache-dir --require-hashes --only-binary=:all: --dest /wheels \
      -r requirements.lock \
 && cp requirements.lock /wheels/


FROM ${BASE_IMAGE}

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
# CONSUL_LEADER_REVISION is what consul_leader_build_info{revision} reports.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONSUL_LEADER_REVISION=${REVISION}

# A system user with a fixed numeric id: the numeric USER below works even where the host
# cannot resolve names (hadolint DL3066), and files the task writes into a shared alloc
# directory get an id operators can predict. --no-log-init keeps lastlog small for high ids.
RUN groupadd --system --gid 10001 consul-leader \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin consul-leader

# The wheels are bind-mounted from the build stage rather than copied, so they never become
# a layer of this image (RUN --mount needs BuildKit, the default builder since Docker 23, or
# podman/buildah). First the locked dependencies, each checked against its hash, then the
# project's wheel without dependencies; `pip check` fails the build if the two disagree.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels --require-hashes \
      -r /wheels/requirements.lock \
 && pip install --no-cache-dir --no-index --no-deps /wheels/consul_leader-*.whl \
 && pip check

USER 10001:10001

# /metrics, /livez, /readyz (/healthz: alias of /livez), /primary, /replica, /status
# (CONSUL_LEADER_LISTEN, default :9500).
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
