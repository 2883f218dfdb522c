# The hub's image: `cloud-hub serve` from the repository's two distributions,
# audience-edge (the MQTT contract) and audience-hub. Build context: the repository root.
#
#   docker build -f deploy/hub.Dockerfile -t audience-hub:0.1.0 .
#   (or `docker compose -f deploy/docker-compose.yml build hub`)
#
# Both distributions are pure Python and every dependency (asyncpg, redis, pydantic-core...)
# has manylinux wheels, so no compiler is needed. docs/hub.md, "Running the hub
# with Docker Compose".

# --- 1. the two wheels, built from this checkout -------------------------------------
FROM python:3.11.14-slim-bookworm AS wheels

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# audience-edge: the root pyproject.toml packages only edge_agent.
COPY pyproject.toml README.md LICENSE ./
COPY edge_agent ./edge_agent
# audience-hub: hub-package/ holds links to ../cloud_hub and ../LICENSE; they are made
# again here rather than copied, so the build does not depend on how COPY treats links.
COPY cloud_hub ./cloud_hub
COPY hub-package/pyproject.toml hub-package/README.md ./hub-package/
RUN ln -s ../cloud_hub hub-package/cloud_hub \
    && ln -s ../LICENSE hub-package/LICENSE \
    && find . -name __pycache__ -prune -exec rm -rf {} + \
    && pip wheel --no-deps --wheel-dir /wheels . ./hub-package

# --- 2. the runtime: the wheels and their dependencies, nothing else -------------------
FROM python:3.11.14-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/hub PATH=/opt/hub/bin:$PATH

COPY --from=wheels /wheels /tmp/wheels
# --find-links: audience-hub pins audience-edge==0.1.0, which comes from the wheelhouse;
# the rest (fastapi, uvicorn, asyncpg, redis, paho-mqtt...) from PyPI.
RUN python -m venv /opt/hub \
    && pip install --find-links /tmp/wheels /tmp/wheels/audience_hub-*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/audience-hub \
        --create-home --shell /usr/sbin/nologin hub

USER hub
WORKDIR /var/lib/audience-hub
# Inside the container the API must listen on every interface; the compose file decides
# what the host publishes.
ENV HUB_HTTP_HOST=0.0.0.0 HUB_HTTP_PORT=8000 HUB_STATE_DIR=/var/lib/audience-hub
EXPOSE 8000

# 200 while ingest works (database and broker up), 503 otherwise (docs/hub.md).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["cloud-hub", "serve"]
