# syntax=docker/dockerfile:1
# Build stage: compile wheels (asyncpg, uvloop, httptools need a compiler).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the product needs: the simulators in sandbox/ stay out of the context (.dockerignore) and of
# /src, so `pip install .` finds the app package alone.
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

# Final stage: no build tools, non-root.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    CONTACTSYNC_ENV=production CONTACTSYNC_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 contactsync
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=contactsync:contactsync alembic.ini ./
COPY --chown=contactsync:contactsync migrations ./migrations
COPY --chown=contactsync:contactsync app ./app
USER contactsync
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["contactsync", "serve", "--host", "0.0.0.0", "--port", "8000"]
