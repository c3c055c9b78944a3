# rnnwatch runtime image: the detector only (kafka-python, onnxruntime, numpy, prometheus-client, orjson).
# No torch, no compilers in the final stage. Build: docker build -t rnnwatch .
# Models: mount yours at /models/model.onnx (RNNWATCH_MODEL points there); without a mount the bundled
# price model inside the package is used.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY export ./export
COPY evaluate ./evaluate
RUN python -m venv /opt/rnnwatch \
 && /opt/rnnwatch/bin/pip install --upgrade pip \
 && /opt/rnnwatch/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="rnnwatch" \
      org.opencontainers.image.description="Novelty detection on Kafka streams with recurrent ONNX step models" \
      org.opencontainers.image.licenses="Apache-2.0"
# The ops server listens on loopback by default; in a container it must be reachable from outside
# (Prometheus, kubelet probes), and the container's network namespace is the boundary.
ENV PATH=/opt/rnnwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RNNWATCH_METRICS_HOST=0.0.0.0 \
    RNNWATCH_METRICS_PORT=9108 \
    RNNWATCH_SHUTDOWN_GRACE_MS=30000
RUN groupadd --system --gid 10001 rnnwatch \
 && useradd --system --uid 10001 --gid rnnwatch --no-create-home --shell /usr/sbin/nologin rnnwatch \
 && mkdir -p /models && chown rnnwatch:rnnwatch /models
COPY --from=builder /opt/rnnwatch /opt/rnnwatch
USER 10001:10001
VOLUME ["/models"]
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RNNWATCH_METRICS_PORT', '9108'), timeout=2)"]
ENTRYPOINT ["rnnwatch"]
CMD ["run"]
