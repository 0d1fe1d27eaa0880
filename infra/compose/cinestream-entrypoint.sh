#!/bin/sh
# Entrypoint of the cinestream image: with SPARK_AUTH_SECRET set, every spark-submit of this
# container authenticates to the standalone master and its executors (spark.authenticate), the
# secret kept in a private spark-defaults.conf rather than on command lines or in Airflow's
# rendered task arguments. Then Airflow's own entrypoint runs the command.
set -eu
if [ -n "${SPARK_AUTH_SECRET:-}" ]; then
  SPARK_CONF_DIR=${SPARK_CONF_DIR:-$HOME/spark-conf}
  mkdir -p "$SPARK_CONF_DIR"
  umask 077
  printf 'spark.authenticate true\nspark.authenticate.secret %s\n' "$SPARK_AUTH_SECRET" \
    > "$SPARK_CONF_DIR/spark-defaults.conf"
  export SPARK_CONF_DIR
fi
exec /entrypoint "$@"
