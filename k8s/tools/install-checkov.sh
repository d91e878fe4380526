#!/usr/bin/env bash
# Installs the manifest security scanner (checkov) into its own virtualenv, apart from the
# project's: checkov pins many libraries of its own. Idempotent; prints the checkov path.
#   k8s/tools/install-checkov.sh [VENV_DIR]     (default: var/tools/checkov)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${root}/var/tools/checkov}"
version="3.3.30"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ ! -x "${venv}/bin/checkov" ]] || ! "${venv}/bin/checkov" --version 2>/dev/null | grep -qx "${version}"; then
  "${python}" -m venv "${venv}" >&2
  "${venv}/bin/pip" install -q --disable-pip-version-check "checkov==${version}" >&2
fi
echo "${venv}/bin/checkov"
