# Container image for otelsnap. Build: docker build -t otelsnap:0.1.0 .
# Without arguments it runs the embedded default config, which listens on
# 127.0.0.1 only: right for a sidecar that shares the pod's loopback with a
# collector. Pass `run --config FILE` with 0.0.0.0 endpoints (see
# otel-config/otelsnap-gateway.yaml) to receive from other pods.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY processors ./processors
RUN pip install --no-cache-dir . && useradd --system --uid 10001 otelsnap \
    && mkdir -p /var/lib/otelsnap && chown otelsnap /var/lib/otelsnap
USER otelsnap
# OTLP gRPC, OTLP HTTP, own metrics
EXPOSE 4317 4318 8888
ENTRYPOINT ["otelsnap"]
CMD ["run"]
