#!/usr/bin/env sh
# The images' lock files: every package each role installs, pinned, with its hashes
# (pip install --require-hashes). Run after changing pyproject.toml's dependencies;
# tests/test_locks.py fails when a lock no longer matches pyproject.toml.
set -eu
cd "$(dirname "$0")/.."
for role in lookup fallback jobs; do
    .venv/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
        --no-emit-index-url --no-emit-find-links --extra "$role" \
        --output-file "requirements/$role.txt" pyproject.toml
    # the project's own extras name the project itself: the images install it apart
    # (pip install --no-deps .), so its line goes
    sed -i '/^prescore @ /d' "requirements/$role.txt"
done
