# ltx-server on an NVIDIA GPU. Build:  docker build -t ltx-server .
# Run (weights in a named volume, pulled once): see "Running on a GPU" in README.md
#
# The torch wheel brings its own CUDA runtime libraries; the base image supplies the CUDA user
# space the driver pairs with, and the host needs only the NVIDIA driver + container toolkit.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python is 3.12 (the project needs >= 3.11). Distribution packages are not
# version-pinned: the base image tag pins the release, and security updates should flow in.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The CUDA build of torch first (its own layer: ~3 GB that rarely changes), then the project.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md weights.lock ./
COPY pipeline ./pipeline
COPY server ./server
RUN pip install .

# Non-root; weights and job data live in volumes owned by this user.
RUN groupadd --gid 10001 ltx \
    && useradd --create-home --uid 10001 --gid 10001 ltx \
    && mkdir -p /weights /data \
    && chown 10001:10001 /weights /data
USER 10001:10001

ENV LTX_HOST=0.0.0.0 \
    LTX_PORT=8000 \
    LTX_DATA_DIR=/data \
    LTX_WEIGHTS_DIR=/weights \
    LTX_WEIGHTS_LOCK=/app/weights.lock \
    HF_HOME=/data/huggingface
VOLUME ["/weights", "/data"]
EXPOSE 8000

# Liveness of the API process (readiness of the model is /readyz). No curl in this image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LTX_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["ltx-server"]
CMD ["serve"]
