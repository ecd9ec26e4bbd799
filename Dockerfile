# futures-actor: the trading bot as a container (paper mode by default).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Pinned runtime dependencies first (cached layer), then the package itself without re-resolving.
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY futures_actor ./futures_actor
COPY config/config.example.json ./config/config.example.json
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --user-group bot \
    && mkdir -p /app/logs /app/state \
    && chown bot:bot /app/logs /app/state

# Never run as root.
USER bot

# Logs (events.jsonl, trades.jsonl) and state (SQLite, kill switch file) outlive the container.
VOLUME ["/app/logs", "/app/state"]
EXPOSE 8080

# Python is PID 1 (exec form below), so SIGTERM reaches the bot's graceful shutdown directly.
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["python", "-m", "futures_actor"]
CMD ["--paper"]
