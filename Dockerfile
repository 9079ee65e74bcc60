# AdaMod Lab: one image for the API, the workers and the dashboard.
# CUDA PyTorch base: torch comes from the image and is never reinstalled (see the constraints below).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

WORKDIR /app

# Pin every package the base image already has (torch, its CUDA wheels, numpy...) so that installing
# the project cannot replace the image's CUDA build of torch with a CPU or other CUDA build.
RUN python -m pip list --format=freeze > /tmp/base-constraints.txt

COPY pyproject.toml README.md ./
COPY adamod ./adamod
COPY studies ./studies
COPY service ./service
COPY workers ./workers
RUN python -m pip install -c /tmp/base-constraints.txt ".[dashboard]" \
    && python -c "import torch, adamod, studies, service, workers; print('torch', torch.__version__)"

# /var/lib/adamod-lab/gpu-locks: the GPU slot locks of `--device auto` (a shared volume in compose;
# a new named volume takes this folder's owner, so the non-root user can lock files in it).
RUN useradd --create-home --uid 1000 adamod \
    && mkdir -p /data /var/lib/adamod-lab/gpu-locks \
    && chown adamod /data /var/lib/adamod-lab/gpu-locks
USER adamod
ENV ADAMOD_LAB_DATABASE_URL=sqlite:////data/adamod_lab.db

EXPOSE 8000
# Inside a container the API must listen on every interface; publish it selectively in compose.
CMD ["adamod-lab", "serve", "--host", "0.0.0.0", "--port", "8000"]
