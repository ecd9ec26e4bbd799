# futures-actor: the trading bot as a container (paper mode by default).
#
# Base image pinned by digest (python:3.11-slim). The digest was taken from public Dockerfiles that pin
# this tag, not read from Docker Hub (no registry access where this file was written): refresh it with
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
# and keep the tag beside it for readers. A digest that does not exist fails the build loudly.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The runtime lock with a sha256 for every distribution (pip-compile --generate-hashes): pip refuses any
# file whose hash is not listed. The build backend comes from a hashed lock too, so that building the
# package (without build isolation, which would fetch setuptools unchecked) installs nothing unverified.
COPY requirements.txt requirements-build.txt ./
RUN pip install --require-hashes -r requirements.txt \
    && pip install --require-hashes -r requirements-build.txt
COPY pyproject.toml README.md LICENSE ./
COPY futures_actor ./futures_actor
COPY config/config.example.json ./config/config.example.json
RUN pip install --no-deps --no-build-isolation . \
    && groupadd --gid 10001 bot \
    && useradd --uid 10001 --gid 10001 --create-home bot \
    && mkdir -p /app/logs /app/state \
    && chown 10001:10001 /app/logs /app/state

# Never run as root; numeric so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# Logs (events.jsonl, trades.jsonl) and state (SQLite, kill switch file) outlive the container. The rest
# of the file system can be read-only (docker-compose.yml: read_only, tmpfs /tmp).
VOLUME ["/app/logs", "/app/state"]
# health.http_port of the default config (docs: README, "Docker").
EXPOSE 8478

# Python is PID 1 (exec form below), so SIGTERM reaches the bot's graceful shutdown directly.
STOPSIGNAL SIGTERM

# Asks /health on the host and port of the config the bot runs with (config/config.json, else the example),
# so it follows a changed health.http_port; exit 1 on 503 (safe mode) or no answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "futures_actor", "healthcheck"]

ENTRYPOINT ["python", "-m", "futures_actor"]
CMD ["--paper"]
