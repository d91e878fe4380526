# The jobs image: spark-submit, the Spark driver and executors on Kubernetes
# (spark.kubernetes.container.image), training and the retraining pipeline.
#
# Why not FROM apache/spark: its python3 images are Ubuntu 22.04 with Python 3.10, and the
# project needs 3.11. So: the same pinned python:3.11 slim base as the services, Debian's
# OpenJDK 17 headless JRE, Spark from the pyspark wheel (it ships the Kubernetes resource
# manager jars), and docker/spark-entrypoint.sh to start the driver and executor pods the
# way Spark's own image does (SPARK_CONF_DIR, HADOOP_CONF_DIR, SPARK_EXTRA_CLASSPATH and
# SPARK_DIST_CLASSPATH on the classpath as there). The packages are requirements/jobs.txt,
# the lock of pyproject.toml's [jobs] extra (pinned, with hashes; requirements/compile.sh
# writes it): pyspark, TensorFlow, LiteRT, pandas and pyarrow; the project itself is
# installed apart with --no-deps. Only prescore/ and jobs/ are copied: the demo's
# generators and trainers (examples/) are in docker/demo.Dockerfile's image, never here.
# Build from the repository root (BuildKit: the build context is what
# docker/jobs.Dockerfile.dockerignore lets in):
#   docker build -f docker/jobs.Dockerfile -t prescore-jobs:0.1.0 .
# Base pinned by tag and digest (refresh: docker buildx imagetools inspect <tag>); any
# Debian-based image with Python 3.11 and its venv module will do. pip's index settings are
# build arguments, as in docker/lookup.Dockerfile.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${PYTHON_IMAGE}
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST

# Debian's security updates move these package versions within bookworm; the base digest
# pins the distribution, and pinning exact .deb versions would break every rebuild.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java

# The packages go into a virtualenv of their own, so no path below depends on where the
# base keeps its Python (/usr/local on python:*, /usr on Debian's): Spark is the pyspark
# wheel's, linked at /opt/spark.
ENV PATH=/opt/venv/bin:$PATH \
    JAVA_HOME=/opt/java \
    SPARK_HOME=/opt/spark \
    PYSPARK_PYTHON=python3 \
    PYSPARK_DRIVER_PYTHON=python3 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LANG=C.UTF-8 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/prescore
# Spark is the pinned pyspark wheel's (jobs/spark_k8s.py's SPARK_VERSION names the same
# version; a test compares them).
COPY requirements/jobs.txt requirements/jobs.txt
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes -r requirements/jobs.txt \
    && ln -s "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" /opt/spark
COPY pyproject.toml README.md ./
COPY prescore prescore
COPY jobs jobs
COPY docker/spark-entrypoint.sh /opt/prescore/docker/spark-entrypoint.sh
# Spark's GPU discovery for executors that request GPUs (k8s/spark-operator-gpu).
COPY docker/getGpusResources.sh /opt/prescore/docker/getGpusResources.sh
# The job scripts stay at /opt/prescore/jobs/*.py for spark-submit (local:///opt/prescore/...);
# the packages are installed so executors import them too.
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin spark \
    && mkdir -p /var/lib/prescore \
    && chown 10001:10001 /var/lib/prescore
# /var/lib/prescore: where the data, photos and model store are mounted (k8s/overlays/dev,
# compose.yaml). Its owner here becomes a fresh named volume's, so the jobs can write it.

USER 10001
# A batch image: Kubernetes watches the pods; this only says the runtime is whole.
HEALTHCHECK --interval=5m --timeout=60s --retries=1 \
    CMD ["python", "-c", "import jobs.submit, pyspark"]
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/prescore/docker/spark-entrypoint.sh"]
CMD ["python", "-m", "jobs.submit", "--help"]
