#!/bin/sh
# kafka-topics.sh of the dev Kafka image: KafkaTopics.java (the subset the topics Job uses).
# KAFKA_HEAP_OPTS as Kafka's own scripts read it; LOG_DIR is accepted and unused (no log file).
# shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags on purpose
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} -Dlog4j2.configurationFile=/opt/kafka/etc/log4j2-tools.properties \
  -cp '/opt/kafka/tools:/opt/kafka/libs/*' KafkaTopics "$@"
