#!/bin/sh
# Spark's GPU discovery script (spark.executor.resource.gpu.discoveryScript): prints the
# executor's GPUs as Spark's ResourceInformation JSON, {"name": "gpu", "addresses": [...]},
# one address per index nvidia-smi lists (those the device plugin gave this container).
# No nvidia-smi or no GPU: no addresses, and Spark refuses to start an executor that asked
# for one, rather than run it on the CPU unnoticed. The same contract as the script Spark
# ships in examples/src/main/scripts/getGpusResources.sh, which the pyspark wheel lacks.
set -eu
indices=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
addresses=$(printf '%s\n' "$indices" | tr -d ' ' | sed -n 's/^\([0-9][0-9]*\)$/"\1"/p' | paste -sd, -)
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
