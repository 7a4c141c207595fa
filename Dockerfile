# syntax=docker/dockerfile:1
# One image for the operator, the Discord bot and the CLI:
#   docker run --rm IMAGE operator --namespace imaging
#   docker run --rm IMAGE bot
#   docker run --rm IMAGE web
#   docker run --rm IMAGE generate "a lighthouse at dusk"
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- build: wheels
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY bot/ bot/
COPY web/ web/
# Wheels for comfykube and every dependency, then a self-contained virtualenv
# from those wheels only (no index at install time).
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/comfykube \
 && /opt/comfykube/bin/pip install --no-index --find-links=/wheels /wheels/*.whl \
 && /opt/comfykube/bin/pip uninstall --yes pip setuptools wheel \
 && find /opt/comfykube -type d -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="comfykube" \
      org.opencontainers.image.description="Kubernetes operator and Discord bot that turn ImageJobs into pictures rendered by ComfyUI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/comfykube/comfykube" \
      org.opencontainers.image.url="https://github.com/comfykube/comfykube" \
      org.opencontainers.image.documentation="https://github.com/comfykube/comfykube/blob/main/docs/helm.md" \
      org.opencontainers.image.vendor="comfykube"

# The base image's pip/setuptools are not needed at run time either.
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 comfykube \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin comfykube

COPY --from=build /opt/comfykube /opt/comfykube
COPY workflows/ /opt/comfykube/share/workflows/

ENV PATH=/opt/comfykube/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WORKFLOWS_DIR=/opt/comfykube/share/workflows \
    TMPDIR=/tmp

# Operator health 8080, operator metrics 9090, bot health 8081, web gallery 8090 and its health 8091.
EXPOSE 8080 9090 8081 8090 8091
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["comfykube"]
CMD ["--help"]
