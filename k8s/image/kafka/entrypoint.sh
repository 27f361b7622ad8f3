#!/bin/bash
# Dev Kafka image: one KRaft node from the jars `make up` runs (scripts/infra/kafka.sh), started
# from the environment the way the apache/kafka image is, so k8s/overlays/kind/kafka.yaml runs on
# either image unchanged:
#   KAFKA_FOO_BAR=x    -> foo.bar=x in server.properties (`__` -> `_`, `___` -> `-`)
#   CLUSTER_ID         formats log.dirs once (meta.properties marks a formatted directory)
#   KAFKA_HEAP_OPTS    JVM heap flags (not a broker setting)
# Writes only below /opt/kafka/config, /opt/kafka/logs and log.dirs (volumes: read-only root).
set -euo pipefail

CONFIG_DIR="${CONFIG_DIR:-/opt/kafka/config}"  # not KAFKA_*: that would become a setting
PROPS="$CONFIG_DIR/server.properties"
# JVM settings, not broker settings, even though they start with KAFKA_.
NOT_SETTINGS=" KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS KAFKA_GC_LOG_OPTS KAFKA_JMX_OPTS "

: "${CLUSTER_ID:?CLUSTER_ID must be set (any base64url UUID, fixed per volume)}"

{
  echo "# Written by the image's entrypoint from KAFKA_* variables at start."
  while IFS='=' read -r name value; do
    [[ "$name" == KAFKA_* && "$NOT_SETTINGS" != *" $name "* ]] || continue
    key="${name#KAFKA_}"
    key="${key,,}"
    key="${key//___/-}"
    key="${key//__/@}"  # placeholder: `__` means a literal underscore, `_` a dot
    key="${key//_/.}"
    key="${key//@/_}"
    printf '%s=%s\n' "$key" "$value"
  done < <(env)
} >"$PROPS"

grep -q '^log\.dirs=' "$PROPS" || echo "log.dirs=/var/lib/kafka/data" >>"$PROPS"
log_dirs="$(sed -n 's/^log\.dirs=//p' "$PROPS")"

# shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags on purpose
java=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile=/opt/kafka/etc/log4j2.properties
  -Dkafka.logs.dir=/opt/kafka/logs
  -cp '/opt/kafka/libs/*')

first_dir="${log_dirs%%,*}"
if [[ ! -f "$first_dir/meta.properties" ]]; then
  mkdir -p "$first_dir"
  "${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$PROPS"
fi
exec "${java[@]}" kafka.Kafka "$PROPS"
