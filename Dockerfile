# The forecaster service: gRPC on port 50051, the dashboard on 8080, SQLite on the /data volume.
#   docker build -t forecaster .
#   docker run -p 50051:50051 -p 8080:8080 -v forecaster-data:/data forecaster
# torch is pinned to 2.13.0; to get the CPU-only wheel instead of the CUDA build, pass a CPU
# wheel index: docker build --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index> .
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY forecaster ./forecaster
RUN pip install "torch==2.13.0" && pip install ".[tensorboard]"

RUN useradd --create-home --uid 10001 forecaster \
    && mkdir -p /data && chown forecaster:forecaster /data
USER forecaster

ENV FORECASTER_HOST=0.0.0.0 \
    FORECASTER_PORT=50051 \
    FORECASTER_DB=sqlite:////data/forecaster.db \
    FORECASTER_HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 50051 8080

# Uses the gRPC health service (grpc.health.v1), not a TCP probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["forecaster", "health"]
# SIGTERM (docker stop) drains in-flight RPCs for FORECASTER_GRACE_S and closes the database.
STOPSIGNAL SIGTERM
ENTRYPOINT ["forecaster", "serve"]
