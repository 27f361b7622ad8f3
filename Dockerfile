# syntax=docker/dockerfile:1
# One image for the three services; the arguments choose the process:
#   docker run servicecall-mesh:dev orchestrator          (serve; also scheduler, executor)
#   docker run servicecall-mesh:dev orchestrator migrate  (also scheduler migrate)
#   docker run servicecall-mesh:dev orchestrator admin create-key <tenant> --create-tenant
# Build from the repository root: docker build -t servicecall-mesh:dev .
# gen/ must be current (`make proto`); it is copied, not generated, so the image carries
# exactly the stubs and descriptor set that CI checked.
# Without Docker, `make images` builds this same file with `buildah bud`, PYTHON_IMAGE being a
# Debian bookworm python3.11 image of its own (scripts/k8s/images.sh): one recipe, two builders.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.lock pyproject.toml k8s/image/runtime_requirements.py ./
# Runtime packages only (no mypy, Envoy wheel, test tools), at the lock's versions and
# hashes; wheels only, so nothing is compiled and a missing wheel fails the build.
RUN python runtime_requirements.py requirements.lock pyproject.toml > runtime.lock \
 && python -m venv /venv \
 && /venv/bin/pip install --require-hashes --only-binary=:all: -r runtime.lock \
 && /venv/bin/pip check

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 mesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mesh
COPY --from=deps /venv /venv
WORKDIR /app
COPY gen/ gen/
COPY mesh/ mesh/
COPY orchestrator/ orchestrator/
COPY scheduler/ scheduler/
COPY executor/ executor/
COPY k8s/image/wait_for_migrations.py k8s/image/
# Byte-compiled now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app
USER 10001:10001
ENTRYPOINT ["python", "-m"]
CMD ["orchestrator"]
