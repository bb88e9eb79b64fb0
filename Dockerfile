# The forecaster service: gRPC on port 50051, the dashboard on 8080, SQLite on the /data volume.
#   docker build -t forecaster .
#   docker run -p 50051:50051 -p 8080:8080 -v forecaster-data:/data forecaster
# The service never needs CUDA: torch (pinned 2.13.0) comes from PyTorch's CPU wheel index by
# default. A GPU image: docker build --build-arg TORCH_INDEX_URL=<a CUDA wheel index> .
# Two stages: the first builds a virtual environment, the second holds only that environment
# (no sources, no build leftovers).
FROM python:3.11-slim AS build

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forecaster ./forecaster
RUN /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
RUN /opt/venv/bin/pip install ".[tensorboard,postgres]"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv

RUN useradd --create-home --uid 10001 forecaster \
    && mkdir -p /data && chown forecaster:forecaster /data
USER forecaster

# Metrics stay off unless FORECASTER_METRICS_PORT is set (deploy/k8s sets 9464).
ENV FORECASTER_HOST=0.0.0.0 \
    FORECASTER_PORT=50051 \
    FORECASTER_DB=sqlite:////data/forecaster.db \
    FORECASTER_LOG_FORMAT=json \
    FORECASTER_HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 50051 8080 9464

# Uses the gRPC health service (grpc.health.v1), not a TCP probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["forecaster", "health"]
# SIGTERM (docker stop) drains in-flight RPCs for FORECASTER_GRACE_S and closes the database.
STOPSIGNAL SIGTERM
ENTRYPOINT ["forecaster", "serve"]
