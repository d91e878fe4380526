# The image test's Redis: Debian's redis-server on the same base as the images, for
# machines that cannot pull redis:7 (compose.yaml's default, PRESCORE_REDIS_IMAGE).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data \
    && chown 999:999 /data
# compose.yaml runs Redis as 999 (the redis image's user) on a named volume at /data,
# which starts with this folder's owner.
USER 999
CMD ["redis-server", "--bind", "127.0.0.1", "--port", "6379"]
