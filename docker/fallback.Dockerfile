# syntax=docker/dockerfile:1
# The live inference fallback: TensorFlow (float32) and LiteRT (int8) behind Flask under
# granian. No Spark: the project is installed with --no-deps plus only what
# docker/requirements-fallback.txt lists. Build from the repository root:
#   docker build -f docker/fallback.Dockerfile -t prescore-fallback:0.1.0 .
# Base pinned by tag and digest (refresh: docker buildx imagetools inspect <tag>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/requirements-fallback.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY prescore prescore
COPY fallback fallback
# Only prescore/ and fallback/ are in /src, so only they are installed.
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin prescore
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
CMD ["python", "-m", "fallback.serve", "--bind", "0.0.0.0:8081"]
