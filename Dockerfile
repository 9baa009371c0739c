# GCE Lab: the web lab (Streamlit) and its job supervisor, on Debian bookworm with Debian's
# Python 3.11 and the pinned requirements from PyPI (torch with its CUDA wheels: a GPU host needs
# only the NVIDIA driver and the NVIDIA container toolkit). docs/docker.md has the details.
#   docker build -t gce-lab .                          # add --build-arg EXTRAS=1 for Ray + PostgreSQL
#   docker run -d --stop-timeout 40 -e GCE_LAB_PASSWORD=... -p 127.0.0.1:8501:8501 \
#       -v gce-data:/data -v gce-store:/home/lab/.gce_lab gce-lab
# The lab binds 0.0.0.0 inside the container, which the launcher (`python -m app`) allows only
# together with a password: without GCE_LAB_PASSWORD the container refuses to start.
# BASE: Debian's slim image; `make docker-test` makes localhost/debian:bookworm-slim with
# debootstrap (docker/base-image.sh), the same Debian, where no registry can be reached.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/gce-lab \
    HOME=/home/lab \
    GCE_LAB_HOME=/home/lab/.gce_lab \
    GCE_LAB_DATA=/data \
    GCE_LAB_PORT=8501 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# A non-root user with a writable home (Streamlit keeps ~/.streamlit there).
RUN groupadd --gid 1000 lab \
    && useradd --uid 1000 --gid lab --create-home --shell /usr/sbin/nologin lab

# Debian's Python 3.11 and a virtual environment for the pinned requirements (Debian's own Python
# refuses pip installs outside one). A C and C++ compiler and Python's headers for torch.compile
# (a spec's `compile`): on CUDA, Triton builds its kernel launcher with them; on the CPU,
# inductor's kernels are C++. ca-certificates: the data sets' downloads (--download) use HTTPS.
# Debian's versions follow bookworm's security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
       gcc g++ libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The requirements before the code, each its own layer: a change to the code rebuilds none of them.
# CA_BUNDLE: a CA bundle mounted for this build only (`make docker-test` mounts the host's when
# its HTTPS goes through a proxy with its own CA); never copied into the image.
# TORCH_INDEX_URL: an index to take torch and torchvision from first, e.g. PyTorch's CPU-only
# one (https://download.pytorch.org/whl/cpu): a ~1 GB smaller image, without CUDA.
WORKDIR /opt/gce-lab
COPY requirements.txt requirements-extras.txt ./
ARG CA_BUNDLE=""
ARG TORCH_INDEX_URL=""
RUN if [ -n "$CA_BUNDLE" ]; then export PIP_CERT="$CA_BUNDLE"; fi \
    && if [ -n "$TORCH_INDEX_URL" ]; then \
         grep -E '^(torch|torchvision)==' requirements.txt > /tmp/torch.txt \
         && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt && rm /tmp/torch.txt; \
       fi \
    && pip install -r requirements.txt
ARG EXTRAS=""
RUN if [ -n "$CA_BUNDLE" ]; then export PIP_CERT="$CA_BUNDLE"; fi \
    && if [ -n "$EXTRAS" ]; then pip install -r requirements-extras.txt; fi

COPY pyproject.toml README.md ./
COPY .streamlit/config.toml .streamlit/config.toml
COPY gce_core/ gce_core/
COPY jobs/ jobs/
COPY app/ app/

# The data sets (/data) and the store (database, checkpoints, logs) are volumes.
RUN mkdir -p /data /home/lab/.gce_lab \
    && chown -R lab:lab /data /home/lab
USER lab
VOLUME ["/data", "/home/lab/.gce_lab"]
EXPOSE 8501
# The health check and the server follow GCE_LAB_PORT (`-e GCE_LAB_PORT=9000 -p 9000:9000`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ['GCE_LAB_PORT'], timeout=4)"]
# `sh -c 'exec ...'`: the launcher replaces the shell, so it is PID 1 and gets `docker stop`'s SIGTERM.
CMD ["sh", "-c", "exec python -m app --address 0.0.0.0 --port \"$GCE_LAB_PORT\""]
