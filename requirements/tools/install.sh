#!/usr/bin/env bash
# Installs a tool the tests run into a virtualenv of its own, apart from the project's
# (each pins libraries of its own that the project's locks do not admit): the lock
# requirements/tools/NAME.txt, pinned with hashes (requirements/compile.sh writes it).
# Idempotent (installs again when the lock changed); prints the virtualenv's bin folder.
#   requirements/tools/install.sh NAME PIN [VENV_DIR]   (default: var/tools/NAME)
# PIN is the pin the lock must hold (checkov==3.3.30): the caller's version, checked.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
name="$1" pin="$2"
venv="${3:-${root}/var/tools/${name}}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
lock="${root}/requirements/tools/${name}.txt"
grep -qx "${pin} \\\\" "${lock}" || { echo "${lock} does not pin ${pin}: run requirements/compile.sh" >&2; exit 1; }
stamp="${venv}/.lock-sha256"
want="$(sha256sum "${lock}" | cut -d' ' -f1)"
# one install at a time into a virtualenv: test processes running side by side may ask at once
mkdir -p "$(dirname "${venv}")"
exec 9>"${venv}.install-lock"
flock 9
if [[ ! -x "${venv}/bin/python" ]] || [[ "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
  "${python}" -m venv "${venv}" >&2
  "${venv}/bin/pip" install -q --disable-pip-version-check --require-hashes -r "${lock}" >&2
  echo "${want}" > "${stamp}"
fi
echo "${venv}/bin"
