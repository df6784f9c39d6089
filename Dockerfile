# serval's container images. Two targets:
#   runtime  the binary alone: XGBoost and LightGBM models, the CLI; ONNX and Python endpoints fail
#            to load with an error naming what is missing (ONNX Runtime, a Python)
#   full     (the default) + Python 3 with onnxruntime (which also gives the server its ONNX Runtime
#            library), numpy, scikit-learn and joblib for Python endpoints; add your own libraries
#            with `serval config --extra-python-packages` or by building FROM this image
# Build: docker build -t serval:0.1.0 .            (or --target runtime)
# No secrets are baked in: the store URL and credentials come from the environment at run time.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p serval \
 && install -D -m 0755 target/release/serval /out/usr/local/bin/serval

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 serval \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/serval --no-create-home --shell /usr/sbin/nologin serval \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/serval
COPY --from=build /out/ /
# The home holds the model cache, unpacked code and the worker package: the only path serval
# writes (mount an emptyDir or a volume there when the root filesystem is read-only).
ENV SERVAL_HOME=/var/lib/serval
USER 10001:10001
WORKDIR /var/lib/serval
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
# No curl in the image: bash asks /health/live over a raw TCP connection.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SERVAL_PORT:-8080} && printf 'GET /health/live HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/serval"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--grpc-port", "8081"]

FROM runtime AS full
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/serval-python \
 && /opt/serval-python/bin/pip install --no-cache-dir --disable-pip-version-check \
      onnxruntime==1.32.0 numpy==2.4.6 scikit-learn==1.9.1 joblib==1.6.0
ENV SERVAL_PYTHON=/opt/serval-python/bin/python
USER 10001:10001
