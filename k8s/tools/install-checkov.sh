#!/usr/bin/env bash
# Installs the manifest security scanner (checkov) into its own virtualenv, apart from the
# project's: checkov pins many libraries of its own. What it installs is the lock
# requirements/tools/checkov.txt (requirements/tools/install.sh); prints the checkov path.
#   k8s/tools/install-checkov.sh [VENV_DIR]     (default: var/tools/checkov)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="3.3.30"
bin="$("${root}/requirements/tools/install.sh" checkov "checkov==${version}" ${1:+"$1"})"
echo "${bin}/checkov"
