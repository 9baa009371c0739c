# syntax=docker/dockerfile:1
# GCE Lab: the web lab (Streamlit) and its job supervisor, with CUDA-enabled PyTorch wheels
# (PyPI's torch 2.15 Linux x86_64 wheels bundle the CUDA runtime; a GPU host needs only the NVIDIA
# driver and the NVIDIA container toolkit). docs/docker.md has the details.
#   docker build -t gce-lab .                          # add --build-arg EXTRAS=1 for Ray + PostgreSQL
#   docker run -e GCE_LAB_PASSWORD=... -p 127.0.0.1:8501:8501 \
#       -v gce-data:/data -v gce-store:/home/lab/.gce_lab gce-lab
# The lab binds 0.0.0.0 inside the container, which the launcher (`python -m app`) allows only
# together with a password: without GCE_LAB_PASSWORD the container refuses to start.
FROM python:3.11-slim-bookworm

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/gce-lab \
    HOME=/home/lab \
    GCE_LAB_HOME=/home/lab/.gce_lab \
    GCE_LAB_DATA=/data \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# A non-root user with a writable home (Streamlit keeps ~/.streamlit there).
RUN groupadd --gid 1000 lab \
    && useradd --uid 1000 --gid lab --create-home --shell /usr/sbin/nologin lab

# A C and C++ compiler for torch.compile (a spec's `compile`): on CUDA, Triton builds its kernel
# launcher with one; on the CPU, inductor's kernels are C++. Debian's versions follow bookworm's
# security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/gce-lab
COPY requirements.txt requirements-extras.txt ./
RUN pip install -r requirements.txt \
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
CMD ["python", "-m", "app", "--address", "0.0.0.0", "--port", "8501"]
