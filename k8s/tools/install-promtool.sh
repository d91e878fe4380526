#!/usr/bin/env bash
# Finds or installs promtool (Prometheus's rule checker) for tests/test_monitoring.py and
# prints its path. A promtool on PATH is used as it is; else Debian's prometheus package
# is downloaded (apt-get download needs no root) and unpacked under var/tools/prometheus.
#   k8s/tools/install-promtool.sh [DIR]     (default: var/tools/prometheus)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-${root}/var/tools/prometheus}"
if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
if [[ ! -x "${dir}/usr/bin/promtool" ]]; then
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "promtool not found, and no apt-get/dpkg-deb to fetch Debian's prometheus package" >&2
    exit 1
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  (cd "${work}" && apt-get download -q prometheus >&2)
  mkdir -p "${dir}"
  dpkg-deb -x "${work}"/prometheus_*.deb "${dir}"
fi
echo "${dir}/usr/bin/promtool"
