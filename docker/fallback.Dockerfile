# The live inference fallback: Flask under granian, models in LiteRT (float32 and int8
# .tflite variants). No Spark. The packages come from one lock, chosen by the build arg
# LOCK (requirements/compile.sh writes both, pinned, with hashes):
#   fallback     (default) pyproject.toml's [fallback]: LiteRT, no TensorFlow. Serves the
#                models registered with a LiteRT variant (FALLBACK_RUNTIME auto, float32, int8).
#   fallback-tf  [fallback] plus [tf]: TensorFlow too, for a model with no LiteRT variant
#                (the fallback then loads its SavedModel, runtime tf) or FALLBACK_RUNTIME=tf.
# The project itself is installed apart with --no-deps. Build from the repository root
# (BuildKit: the build context is what docker/fallback.Dockerfile.dockerignore lets in):
#   docker build -f docker/fallback.Dockerfile -t prescore-fallback:0.1.0 .
#   docker build -f docker/fallback.Dockerfile --build-arg LOCK=fallback-tf -t prescore-fallback:0.1.0-tf .
# Base pinned by tag and digest (refresh: docker buildx imagetools inspect <tag>); any
# Debian-based image with Python 3.11 and its venv module will do. pip's index settings are
# build arguments, as in docker/lookup.Dockerfile.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG LOCK=fallback

FROM ${PYTHON_IMAGE} AS build
ARG LOCK
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/fallback.txt requirements/fallback-tf.txt requirements/
RUN case "${LOCK}" in fallback|fallback-tf) ;; \
      *) echo "LOCK must be fallback or fallback-tf, not '${LOCK}'" >&2; exit 2 ;; esac \
    && pip install --no-cache-dir --require-hashes -r "requirements/${LOCK}.txt"
COPY pyproject.toml README.md ./
COPY prescore prescore
COPY fallback fallback
# Only prescore/ and fallback/ are in /src, so only they are installed.
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

FROM ${PYTHON_IMAGE}
ARG LOCK
LABEL io.prescore.lock="requirements/${LOCK}.txt"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FALLBACK_BIND=0.0.0.0:8081 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin prescore
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 8081
# The port is FALLBACK_BIND's (a container may be given another); the health check asks it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-m", "prescore.service.healthcheck", "FALLBACK_BIND"]
CMD ["python", "-m", "fallback.serve"]
