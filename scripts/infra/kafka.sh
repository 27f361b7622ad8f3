#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller), loopback only.
#
#   scripts/infra/kafka.sh {install|start|stop|status|create-topics|bootstrap}
#
# Env:
#   KAFKA_DIR              instance dir (default .run/kafka, relative to the repo root):
#                          server.properties, data/, logs/, kafka.pid
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 (default 59092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 59093)
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version from Maven Central (default 4.1.1)
#   KAFKA_HEAP_OPTS        JVM heap flags (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds between TERM and KILL on stop (default 30)
#   KAFKA_TOPICS           space-separated topics for create-topics (default: the servicecall.* set)
#   KAFKA_PARTITIONS       partitions per topic for create-topics (default 12)
#   JAVA                   java binary (default: java on PATH; needs 17+)
#
# No Kafka distribution tarball is needed: the broker jars come from Maven Central (the only
# place besides the other language registries this project may download from), cached once
# per machine under ${XDG_CACHE_HOME:-~/.cache}/servicecall/kafka-<version>/libs.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
# Kafka 4.x logs via slf4j 1.7 (kafka-clients pins slf4j-api 1.7.36) to Log4j 2, but the
# kafka_2.13 pom does not pull log4j-core or a binding. We add the slf4j *1.x* binding
# (log4j-slf4j-impl, as the Kafka distribution ships): the slf4j2 binding would find no
# slf4j 2 API and Kafka would log nothing. api/core/binding share one version.
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
KAFKA_PORT="${KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-59093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-12}"
KAFKA_TOPICS="${KAFKA_TOPICS:-servicecall.call-events servicecall.timer-requests servicecall.timer-events servicecall.execution-requests servicecall.execution-events}"
JAVA="${JAVA:-java}"

KAFKA_DIR="$(sc_abspath "${KAFKA_DIR:-.run/kafka}")"
KAFKA_HOME="$SC_CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_STAMP="$KAFKA_HOME/.installed"
# What the cached libs were resolved from. The stamp holds this string, so changing the recipe
# (e.g. LOG4J_VERSION, or the pom below) re-resolves instead of reusing a stale classpath.
KAFKA_RECIPE="kafka_2.13:$KAFKA_VERSION log4j:$LOG4J_VERSION binding:log4j-slf4j-impl"
PROPS="$KAFKA_DIR/server.properties"
PIDFILE="$KAFKA_DIR/kafka.pid"
LOGDIR="$KAFKA_DIR/logs"
STDOUT_LOG="$LOGDIR/stdout.log"
SERVER_LOG="$LOGDIR/server.log"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
TOPICS_PY="$(dirname "${BASH_SOURCE[0]}")/kafka_topics.py"

for v in KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_PARTITIONS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || sc_die "$v must be a number, got '${!v}'"
done

# ---- install ------------------------------------------------------------------------------

is_installed() { [[ -f "$KAFKA_STAMP" && "$(<"$KAFKA_STAMP")" == "$KAFKA_RECIPE" ]]; }

do_install() {
  is_installed && return 0  # another process finished it while we waited for the lock
  sc_require_cmd mvn "Debian package 'maven'"
  sc_log "fetching Kafka $KAFKA_VERSION jars from Maven Central (one time, cached in $KAFKA_HOME)"
  local t0 tmp
  t0="$(sc_now_ms)"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: tmp is local
  trap "rm -rf '$tmp'" RETURN
  # A throwaway pom whose only job is to resolve the broker's runtime classpath.
  cat >"$tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>servicecall.infra</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  mkdir -p "$KAFKA_HOME"
  rm -rf "$KAFKA_LIBS.tmp"
  # -B: batch mode (no ANSI, no prompts) for CI; output kept in a file and shown only on failure.
  if ! (cd "$tmp" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_LIBS.tmp" >"$tmp/mvn.log" 2>&1); then
    sc_log_tail "$tmp/mvn.log" 60
    sc_die "mvn could not fetch Kafka $KAFKA_VERSION (is that version on Maven Central?)"
  fi
  # Move into place, then stamp: a crash halfway leaves no stamp, so the next run redoes it.
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  printf '%s\n' "$KAFKA_RECIPE" >"$KAFKA_STAMP"
  sc_log "installed $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $(( $(sc_now_ms) - t0 )) ms"
}

cmd_install() {
  is_installed && return 0
  sc_with_lock "$SC_CACHE_DIR/kafka-$KAFKA_VERSION.lock" do_install
}

# ---- start / stop ---------------------------------------------------------------------------

write_config() {
  mkdir -p "$KAFKA_DIR/data" "$LOGDIR"
  # Rewritten on every start so env changes (ports) apply. Everything binds to 127.0.0.1 only.
  cat >"$PROPS.tmp" <<PROPS
# Written by scripts/infra/kafka.sh on every start; edits here are overwritten.
# Single node, KRaft combined mode: this JVM is both the broker and the only controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data

# One broker: every internal topic must be RF 1 / min ISR 1 or it can never be created.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the default 50: the first consumer group / transaction on a
# fresh broker creates these synchronously, and 50 segments each make that visibly slow.
offsets.topic.num.partitions=12
transaction.state.log.num.partitions=12

# Topics are created explicitly (create-topics); a typo'd topic name must fail, not appear.
auto.create.topics.enable=false
num.partitions=12
# Consumer groups start consuming at once instead of waiting 3 s for more members (tests).
group.initial.rebalance.delay.ms=0

# The largest record batch accepted (topics inherit it as max.message.bytes): the producers'
# message.max.bytes (1 MiB, mesh/kafka.py MAX_MESSAGE_BYTES) plus 64 KiB of room for batch
# overhead, so nothing a producer accepts is refused here for its size (docs/operations.md).
message.max.bytes=1114112
PROPS
  mv -f "$PROPS.tmp" "$PROPS"

  # Broker logs go to a file at INFO (noisy request/state-change loggers at WARN), never to
  # the terminal that ran `make`; stdout.log only catches JVM-level output (crashes, GC warnings).
  cat >"$KAFKA_DIR/log4j2.properties" <<'LOG4J'
status = warn
name = servicecall-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
LOG4J
}

java_cmd() {
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags on purpose
  printf '%s\0' "$JAVA" $KAFKA_HEAP_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$LOGDIR" \
    -cp "$KAFKA_LIBS/*"
}

# Kafka's Uuid text form: 16 random bytes, base64url without padding. Generated here rather
# than with `StorageTool random-uuid` to save a JVM start. Kafka itself avoids ids that start
# with '-' (they look like CLI flags), so do we.
new_cluster_id() {
  local id
  while :; do
    id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && break
  done
  printf '%s\n' "$id"
}

format_storage_once() {
  # meta.properties marks a formatted log dir; formatting again would need a new cluster id
  # and would orphan the existing data.
  [[ -f "$KAFKA_DIR/data/meta.properties" ]] && return 0
  local -a cmd
  mapfile -d '' cmd < <(java_cmd)
  if ! "${cmd[@]}" kafka.tools.StorageTool format -t "$(new_cluster_id)" -c "$PROPS" \
      >"$LOGDIR/format.log" 2>&1; then
    sc_log_tail "$LOGDIR/format.log"
    sc_die "kafka storage format failed"
  fi
}

wait_ready() {
  local pid="$1" py
  py="$(sc_venv_python)"
  "$py" "$TOPICS_PY" wait --bootstrap "$BOOTSTRAP" --timeout "$KAFKA_START_TIMEOUT" --pid "$pid"
}

cmd_start() {
  local t0 pid
  t0="$(sc_now_ms)"
  cmd_install
  sc_venv_python >/dev/null  # fail before starting a JVM if the readiness probe can't run
  if pid="$(sc_pid_alive "$PIDFILE" "$PROPS")"; then
    wait_ready "$pid" || sc_die "kafka pid $pid is running but not answering on $BOOTSTRAP"
    sc_log "already running on $BOOTSTRAP (pid $pid, $KAFKA_DIR)"
    return 0
  fi
  rm -f "$PIDFILE"
  sc_assert_port_free "$KAFKA_PORT" kafka
  sc_assert_port_free "$KAFKA_CONTROLLER_PORT" "kafka (controller)"
  write_config
  format_storage_once
  local -a cmd
  mapfile -d '' cmd < <(java_cmd)
  printf '\n==== start %s ====\n' "$(date -u +%FT%TZ)" >>"$STDOUT_LOG"
  # setsid+nohup: detach from the caller's terminal/process group so the broker outlives the
  # `make` that started it and ignores its Ctrl-C/hangup. Without job control, the background
  # child is not a group leader, so setsid execs in place and $! is the JVM's own pid.
  (cd "$KAFKA_DIR" && exec setsid nohup "${cmd[@]}" kafka.Kafka "$PROPS" </dev/null >>"$STDOUT_LOG" 2>&1) &
  pid=$!
  printf '%s\n' "$pid" >"$PIDFILE"
  if ! wait_ready "$pid"; then
    sc_log_tail "$SERVER_LOG"
    sc_log_tail "$STDOUT_LOG" 20
    sc_pid_stop "$PIDFILE" "$PROPS" 10
    sc_die "kafka failed to start or did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s (logs: $LOGDIR)"
  fi
  sc_log "started on $BOOTSTRAP (pid $pid, $KAFKA_DIR) in $(( $(sc_now_ms) - t0 )) ms"
}

cmd_stop() {
  local pid
  if pid="$(sc_pid_alive "$PIDFILE" "$PROPS")"; then
    # TERM = controlled shutdown (flushes logs, closes segments cleanly => fast next start).
    sc_pid_stop "$PIDFILE" "$PROPS" "$KAFKA_STOP_TIMEOUT"
    sc_log "stopped pid $pid ($KAFKA_DIR)"
  else
    rm -f "$PIDFILE"
  fi
}

cmd_status() {
  local pid
  if pid="$(sc_pid_alive "$PIDFILE" "$PROPS")"; then
    echo "kafka running: pid $pid, $BOOTSTRAP, dir $KAFKA_DIR"
    return 0
  fi
  echo "kafka stopped"
  return 3
}

cmd_create_topics() {
  local py
  py="$(sc_venv_python)"
  # shellcheck disable=SC2086  # KAFKA_TOPICS is a space-separated list on purpose
  "$py" "$TOPICS_PY" create --bootstrap "$BOOTSTRAP" --partitions "$KAFKA_PARTITIONS" $KAFKA_TOPICS
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  create-topics) cmd_create_topics ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  *) echo "usage: $0 {install|start|stop|status|create-topics|bootstrap}" >&2; exit 2 ;;
esac
