#!/usr/bin/env bash
# Makes a base image for docker/build-images.sh --base on a machine that cannot pull one:
# Debian bookworm with Python 3.11 and its venv module (the distribution of the pinned
# python:3.11-slim-bookworm), bootstrapped from a Debian mirror and imported.
#
#   docker/local-base.sh NAME [MIRROR]     # as root; needs debootstrap (apt-get install debootstrap)
#
# MIRROR defaults to the first Debian mirror apt is configured with, else deb.debian.org.
# The bootstrap takes a couple of minutes and about 300 MB; the folder is removed after.
set -euo pipefail
name=${1:?usage: docker/local-base.sh NAME [MIRROR]}
mirror=${2:-}
if [[ -z "$mirror" ]]; then
  mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | head -n1 | awk '{print $2}' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "local-base.sh: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
tar -C "$root" -c . | docker import - "$name" >/dev/null
echo "local-base.sh: $name: $(docker run --rm --network host "$name" python3 --version)"
