#!/usr/bin/env bash
# Builds prescore's images from the repository: prescore-lookup, prescore-fallback,
# prescore-jobs and prescore-demo (the jobs image plus examples/), tagged :TAG.
#
#   docker/build-images.sh [--tag TAG] [--base IMAGE] [--wheels DIR] [--no-cache] [IMAGE ...]
#
#   --tag TAG      the images' tag (default: dev)
#   --base IMAGE   the Debian-based Python 3.11 image to build on, the PYTHON_IMAGE build
#                  argument (default: the Dockerfiles' pinned python:3.11 slim image)
#   --wheels DIR   install from a folder of wheels instead of a package index: the images'
#                  locks are downloaded into DIR here first (pip download; what DIR holds
#                  already is kept), DIR is served on 127.0.0.1 while the images build, and
#                  pip inside the build reads only it. For a machine whose builds cannot
#                  reach an index.
#   --no-cache     build every layer afresh (docker build --no-cache)
#   IMAGE ...      some of lookup, fallback, jobs, demo (default: all; demo needs jobs)
#
# Builds share the host's network (--network host), so a build reaches the wheel folder on
# 127.0.0.1 and needs no bridge network. BuildKit or the legacy builder: as DOCKER_BUILDKIT
# says; DOCKER names the docker client (default: docker). Behind a mirror, pass pip's
# settings through instead of --wheels:
#   PIP_INDEX_URL=https://mirror/simple docker/build-images.sh
# Prints each image's build time and size.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=dev base="" wheels="" nocache=""
images=()
while (($#)); do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --no-cache) nocache=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    lookup|fallback|jobs|demo) images+=("$1"); shift ;;
    *) echo "build-images.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#images[@]})) || images=(lookup fallback jobs demo)

python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python

args=(--network host)
[[ -n "$nocache" ]] && args+=(--no-cache)
[[ -n "$base" ]] && args+=(--build-arg "PYTHON_IMAGE=$base")
for name in PIP_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST; do
  [[ -n "${!name:-}" ]] && args+=(--build-arg "$name=${!name}")
done

if [[ -n "$wheels" ]]; then
  mkdir -p "$wheels"
  echo "== wheels: the images' locks into $wheels"
  for lock in lookup fallback fallback-tf jobs; do
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r "requirements/$lock.txt" -d "$wheels"
  done
  # What `pip install .` builds the project with, and redis-py's async-timeout below 3.11.3.
  "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    -d "$wheels" "setuptools>=77" wheel packaging
  # The folder's URL is a build argument, part of the build cache's key: one port
  # (PRESCORE_WHEELS_PORT) keeps the layers cached between builds; a random one if taken.
  port=$("$python" - "${PRESCORE_WHEELS_PORT:-38483}" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
)
  "$python" -m http.server "$port" --bind 127.0.0.1 --directory "$wheels" >/dev/null 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" \
      2>/dev/null && break
    sleep 0.1
  done
  args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg PIP_NO_INDEX=1)
fi

summary=()
for image in "${images[@]}"; do
  extra=()
  [[ "$image" == demo ]] && extra=(--build-arg "JOBS_IMAGE=prescore-jobs:$tag")
  echo "== prescore-$image:$tag"
  start=$(date +%s)
  "${DOCKER:-docker}" build "${args[@]}" "${extra[@]}" -f "docker/$image.Dockerfile" -t "prescore-$image:$tag" .
  took=$(($(date +%s) - start))
  size=$("${DOCKER:-docker}" image inspect --format '{{.Size}}' "prescore-$image:$tag")
  summary+=("$(printf '%-28s %6d s %8d MB' "prescore-$image:$tag" "$took" $((size / 1000000)))")
done
echo "== built"
printf '%s\n' "${summary[@]}"
