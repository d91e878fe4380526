#!/usr/bin/env bash
# Entry point of the jobs image. Spark on Kubernetes starts its driver pod with the
# arguments "driver ..." and its executor pods with "executor"; anything else
# (python -m jobs.submit ..., python -m jobs.retrain ..., spark-submit ...) runs as given.
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME is not set}"
classpath="${SPARK_HOME}/jars/*"
if [[ -n "${SPARK_CONF_DIR:-}" ]]; then
  classpath="${SPARK_CONF_DIR}:${classpath}"
fi

case "${1:-}" in
  driver)
    shift
    # The submitter already chose cluster mode; inside the driver pod Spark runs in client mode.
    exec "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    # The driver hands JVM options over as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order.
    java_opts=()
    while IFS= read -r opt; do
      java_opts+=("${opt}")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | cut -d= -f2- || true)
    exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "${classpath}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
