# ttbridge image: one image for every command (`worker`, `topics create`,
# `fake-tiktok`, `retry-worker`, ...). The entrypoint is the `ttbridge` console
# script; the default command is the streaming job:
#
#   docker build -t ttbridge:dev .
#   docker run --rm ttbridge:dev --help
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... -e TIKTOK_ACCESS_TOKEN=... ttbridge:dev          # worker
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... ttbridge:dev topics create
#
# Configuration is environment only (see the contract table in DESIGN.md /
# README); nothing secret is baked into the image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
# Installs the package and its dependencies into a self-contained virtualenv.
# Every dependency (faust-streaming, aiokafka, orjson, aiohttp, rocksdict, ...)
# ships manylinux wheels, so no compiler is needed.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
 && ttbridge --help >/dev/null

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ttbridge" \
      org.opencontainers.image.description="Kafka-native server-side bridge to the TikTok Events API"

# Unprivileged user with a fixed numeric id (Kubernetes `runAsNonRoot` can only
# verify a numeric USER) and the RocksDB state directory it owns. A named
# volume mounted on /var/lib/ttbridge inherits this ownership.
RUN groupadd --system --gid 10001 ttbridge \
 && useradd --system --uid 10001 --gid ttbridge --home-dir /var/lib/ttbridge \
            --no-create-home --shell /usr/sbin/nologin ttbridge \
 && mkdir -p /var/lib/ttbridge \
 && chown ttbridge:ttbridge /var/lib/ttbridge \
 && chmod 0750 /var/lib/ttbridge

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TTBRIDGE_DATA_DIR=/var/lib/ttbridge \
    TTBRIDGE_WEB_PORT=6066

USER 10001:10001

# Worker web server: /healthz, /readyz, /metrics.
EXPOSE 6066

# Exec form: ttbridge is PID 1 and receives SIGTERM directly, so the worker
# can leave its consumer group and flush RocksDB before the grace period ends.
ENTRYPOINT ["ttbridge"]
CMD ["worker"]
