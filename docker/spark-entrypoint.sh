#!/usr/bin/env bash
# Entry point of the jobs image. Spark on Kubernetes starts its driver pod with the
# arguments "driver ..." and its executor pods with "executor"; anything else
# (python -m jobs.submit ..., python -m jobs.retrain ..., spark-submit ...) runs as given.
#
# The classpath is built as apache/spark's image entrypoint builds it, so the same
# variables configure it: SPARK_CONF_DIR (else $SPARK_HOME/conf), HADOOP_CONF_DIR (the
# Hadoop client's core-site.xml and hdfs-site.xml: HDFS HA name services, Kerberos),
# SPARK_EXTRA_CLASSPATH, and SPARK_DIST_CLASSPATH (from `hadoop classpath` when
# HADOOP_HOME is set and it is not). The driver goes through spark-submit, whose launcher
# adds HADOOP_CONF_DIR and SPARK_DIST_CLASSPATH itself; the executor's java line uses
# the classpath built here.
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME is not set}"
classpath="${SPARK_CLASSPATH:+${SPARK_CLASSPATH}:}${SPARK_HOME}/jars/*"
if [[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]]; then
  classpath="${classpath}:${SPARK_EXTRA_CLASSPATH}"
fi
if [[ -n "${HADOOP_HOME:-}" && -z "${SPARK_DIST_CLASSPATH:-}" ]]; then
  SPARK_DIST_CLASSPATH="$("${HADOOP_HOME}/bin/hadoop" classpath)"
  export SPARK_DIST_CLASSPATH
fi
if [[ -n "${HADOOP_CONF_DIR:-}" ]]; then
  export HADOOP_CONF_DIR
  classpath="${HADOOP_CONF_DIR}:${classpath}"
fi
if [[ -n "${SPARK_CONF_DIR:-}" ]]; then
  classpath="${SPARK_CONF_DIR}:${classpath}"
else
  classpath="${SPARK_HOME}/conf:${classpath}"
fi
classpath="${classpath}:${PWD}"  # SPARK-43540: files the driver ships land here
if [[ -n "${SPARK_DIST_CLASSPATH:-}" ]]; then
  classpath="${classpath}:${SPARK_DIST_CLASSPATH}"
fi

case "${1:-}" in
  driver)
    shift
    # The submitter already chose cluster mode; inside the driver pod Spark runs in client mode.
    exec "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
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
