# syntax=docker/dockerfile:1
# scheduler-daemon container image.
#
#   docker build -t scheduler-daemon .
#   docker run -e SCHEDULER_DATABASE__URL=... -e SCHEDULER_HTTP__TOKENS='[...]' \
#     -e SCHEDULER_SQS__QUEUE_URL=... -e SCHEDULER_EVENTBRIDGE__ROLE_ARN=... \
#     -p 8080:8080 scheduler-daemon
#
# config/production.toml lists the environment variables a deployment must set.
# tests/e2e/test_wheel_install.py does what this file does (wheel, fresh venv, run) without
# a container engine.

# --- stage 1: build the wheel --------------------------------------------------------------
FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel is built from (hatchling reads README.md as the long description).
COPY pyproject.toml README.md ./
COPY scheduler_daemon/ ./scheduler_daemon/

# pip fetches the build backend (hatchling, per pyproject.toml's build-system.requires) into
# an isolated build environment; --no-deps: the dependencies are installed in stage 2.
RUN pip wheel --no-deps --wheel-dir /dist .

# --- stage 2: runtime ------------------------------------------------------------------------
FROM python:3.12-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="scheduler-daemon" \
      org.opencontainers.image.description="An asyncio task scheduler on PostgreSQL and AWS: one-off and recurring work over HTTP, run reliably." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# tini runs as PID 1: it forwards SIGTERM/SIGHUP to the daemon and reaps zombie children.
# Pinned to the upstream release (0.19.0, the last one); the Debian revision floats with the
# base image's release.
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'tini=0.19.0-*' \
    && rm -rf /var/lib/apt/lists/*

# PYTHONDONTWRITEBYTECODE: the venv is read-only for the daemon's user; pip install still
# compiles every module once, at build time.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheel is bind-mounted from stage 1, so it never becomes a layer of this image; its
# dependencies come from the package index as binary wheels (no compiler in this image).
# The venv stays owned by root: the daemon's user cannot modify its own code.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv /opt/venv \
    && pip install --no-cache-dir /dist/*.whl

# A fixed, unprivileged uid/gid (no home, no login shell), so volume and Kubernetes/ECS
# security settings can refer to it by number.
RUN groupadd --system --gid 10001 scheduler \
    && useradd --system --uid 10001 --gid scheduler --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin scheduler

COPY config/production.toml /etc/scheduler-daemon/production.toml

# Settings: the baked-in file, overridden by SCHEDULER_<SECTION>__<KEY> variables (secrets
# come from the task definition; see the file's header).
ENV SCHEDULER_CONFIG=/etc/scheduler-daemon/production.toml \
    SCHEDULER_HTTP__PORT=8080

# A writable scratch cwd: the daemon writes nothing to disk when database.url is set.
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8080

# The daemon drains on SIGTERM (shutdown.grace_s = 90 s; give `docker stop -t`/ECS
# stopTimeout more than that).
STOPSIGNAL SIGTERM

# GET /healthz on 127.0.0.1:$SCHEDULER_HTTP__PORT (http.host 0.0.0.0 is probed on loopback).
# ECS ignores this and uses the task definition's healthCheck: use the same command there.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["scheduler-daemon", "healthcheck", "--timeout", "5"]

ENTRYPOINT ["tini", "--", "scheduler-daemon"]
CMD ["run"]
