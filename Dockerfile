# AdaMod Lab: one Dockerfile, one target per kind of service (compose picks them with `target:`).
#   api         python:3.11-slim with CPU torch: the API and optuna-dashboard (no CUDA, ~1 GB)
#   worker-cpu  api plus a C compiler: CPU workers (adamod's fused CPU kernel is compiled from C
#               with cc -fopenmp -lmvec on first use, see adamod/_cpu_kernel.py)
#   worker      the CUDA PyTorch image plus a C compiler: GPU workers; torch comes from the image
#               and is never reinstalled (see the constraints below)
#   docker build --target api -t adamod-lab-api .
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# ------------------------------------------------------------------ the project's files, once
FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY adamod ./adamod
COPY studies ./studies
COPY service ./service
COPY workers ./workers

# ------------------------------------------------------------------ api (and dashboard)
FROM ${PYTHON_IMAGE} AS api
ARG TORCH_VERSION=2.5.1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg
WORKDIR /app
# CPU torch from the PyTorch CPU index first (PyPI's Linux wheel would pull the CUDA libraries),
# then the project with torch pinned to it.
RUN python -m pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
    && python -m pip list --format=freeze | grep -i '^torch==' > /tmp/torch-constraint.txt
COPY --from=source /src ./
RUN python -m pip install -c /tmp/torch-constraint.txt ".[dashboard]" \
    && python -c "import torch, adamod, studies, service, workers; print('torch', torch.__version__)"
# /data: the SQLite default and the workers' data sets (a volume in compose);
# /var/lib/adamod-lab/gpu-locks: the GPU slot locks of `--device auto` (a new named volume takes
# this folder's owner, so the non-root user can lock files in it).
RUN useradd --create-home --uid 1000 adamod \
    && mkdir -p /data /var/lib/adamod-lab/gpu-locks \
    && chown adamod /data /var/lib/adamod-lab/gpu-locks
USER adamod
ENV ADAMOD_LAB_DATABASE_URL=sqlite:////data/adamod_lab.db \
    ADAMOD_LAB_DATA_DIR=/data
EXPOSE 8000
# Inside a container the API listens on every interface, so `serve` requires tokens
# (ADAMOD_LAB_API_TOKENS) unless ADAMOD_LAB_ALLOW_NO_AUTH says otherwise.
CMD ["adamod-lab", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ------------------------------------------------------------------ worker-cpu
FROM api AS worker-cpu
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
USER adamod
CMD ["adamod-lab", "worker", "--device", "cpu"]

# ------------------------------------------------------------------ worker (CUDA)
FROM ${CUDA_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Pin every package the base image already has (torch, its CUDA wheels, numpy...) so that installing
# the project cannot replace the image's CUDA build of torch with a CPU or other CUDA build.
RUN python -m pip list --format=freeze > /tmp/base-constraints.txt
COPY --from=source /src ./
RUN python -m pip install -c /tmp/base-constraints.txt . \
    && python -c "import torch, adamod, studies, service, workers; print('torch', torch.__version__)"
RUN useradd --create-home --uid 1000 adamod \
    && mkdir -p /data /var/lib/adamod-lab/gpu-locks \
    && chown adamod /data /var/lib/adamod-lab/gpu-locks
USER adamod
ENV ADAMOD_LAB_DATA_DIR=/data
CMD ["adamod-lab", "worker", "--device", "auto"]
