#!/usr/bin/env bash
# Installs the manifest security scanner (checkov) into its own virtualenv, apart from the
# project's: checkov pins many libraries of its own. What it installs is the lock
# requirements/tools/checkov.txt (pinned, with hashes; requirements/compile.sh writes it).
# Idempotent (installs again when the lock changed); prints the checkov path.
#   k8s/tools/install-checkov.sh [VENV_DIR]     (default: var/tools/checkov)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${root}/var/tools/checkov}"
version="3.3.30"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
lock="${root}/requirements/tools/checkov.txt"
grep -qx "checkov==${version} \\\\" "${lock}" || { echo "${lock} does not pin checkov==${version}: run requirements/compile.sh" >&2; exit 1; }
stamp="${venv}/.lock-sha256"
want="$(sha256sum "${lock}" | cut -d' ' -f1)"
if [[ ! -x "${venv}/bin/checkov" ]] || [[ "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
  "${python}" -m venv "${venv}" >&2
  "${venv}/bin/pip" install -q --disable-pip-version-check --require-hashes -r "${lock}" >&2
  echo "${want}" > "${stamp}"
fi
echo "${venv}/bin/checkov"
