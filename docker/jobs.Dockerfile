# syntax=docker/dockerfile:1
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
# Base pinned by tag and digest (refresh: docker buildx imagetools inspect <tag>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${PYTHON_IMAGE}

# Debian's security updates move these package versions within bookworm; the base digest
# pins the distribution, and pinning exact .deb versions would break every rebuild.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java

ENV JAVA_HOME=/opt/java \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=python3 \
    PYSPARK_DRIVER_PYTHON=python3 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/prescore
# Spark is the pinned pyspark wheel's (jobs/submit.py's SPARK_VERSION names the same
# version; a test compares them).
COPY requirements/jobs.txt requirements/jobs.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/jobs.txt
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
    && useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin spark

USER 10001
# A batch image: Kubernetes watches the pods; this only says the runtime is whole.
HEALTHCHECK --interval=5m --timeout=60s --retries=1 \
    CMD ["python", "-c", "import jobs.submit, pyspark"]
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/prescore/docker/spark-entrypoint.sh"]
CMD ["python", "-m", "jobs.submit", "--help"]
