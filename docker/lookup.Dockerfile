# The lookup API: Flask under granian, reading Redis. No TensorFlow, no Spark, no pandas:
# the packages are requirements/lookup.txt, the lock of pyproject.toml's [lookup] extra
# (pinned, with hashes; requirements/compile.sh writes it), and the project itself is
# installed apart with --no-deps. Build from the repository root (BuildKit: the build
# context is what docker/lookup.Dockerfile.dockerignore lets in):
#   docker build -f docker/lookup.Dockerfile -t prescore-lookup:0.1.0 .
# Base pinned by tag and digest (refresh: docker buildx imagetools inspect <tag>); any
# Debian-based image with Python 3.11 and its venv module will do (README "Build the images
# without a registry"). pip's PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX and
# PIP_TRUSTED_HOST may be given as build arguments (a mirror, a folder of wheels); unset,
# pip reads PyPI.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/lookup.txt requirements/lookup.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/lookup.txt
COPY pyproject.toml README.md ./
COPY prescore prescore
COPY lookup lookup
# Only prescore/ and lookup/ are in /src, so only they are installed.
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOOKUP_BIND=0.0.0.0:8080
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin prescore
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 8080
# The port is LOOKUP_BIND's (a container may be given another); the health check asks it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "prescore.service.healthcheck", "LOOKUP_BIND"]
CMD ["python", "-m", "lookup.serve"]
