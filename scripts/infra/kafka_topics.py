"""Readiness probe and topic creation for the local Kafka started by scripts/infra/kafka.sh.

Uses confluent_kafka (already in the project venv) instead of Kafka's Java CLI tools: no second
JVM start (~2 s each) and no kafka-tools jars to fetch.

    python kafka_topics.py wait   --bootstrap 127.0.0.1:59092 --timeout 90 [--pid N]
    python kafka_topics.py create --bootstrap 127.0.0.1:59092 --partitions 12 TOPIC...
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


def _admin(bootstrap: str) -> AdminClient:
    # log_level 0: librdkafka would otherwise print every refused connection while the broker
    # is still starting; failures surface as exceptions/exit codes instead.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait(bootstrap: str, timeout: float, pid: int | None) -> int:
    """Return 0 once the broker answers a metadata request and lists itself as a broker."""
    deadline = time.monotonic() + timeout
    admin = None
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"kafka process {pid} exited during startup", file=sys.stderr)
            return 2
        # Cheap TCP check first: constructing clients against a closed port only burns time.
        if _port_open(bootstrap):
            admin = admin or _admin(bootstrap)
            try:
                md = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                if md.brokers:
                    return 0
            except KafkaException:
                pass
        time.sleep(0.1)
    print(f"kafka on {bootstrap} not ready after {timeout:.0f}s", file=sys.stderr)
    return 1


def create(bootstrap: str, partitions: int, topics: list[str]) -> int:
    admin = _admin(bootstrap)
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        print(f"cannot reach kafka on {bootstrap}: {exc}", file=sys.stderr)
        return 1
    for name in topics:
        if name in existing and len(existing[name].partitions) != partitions:
            # Not fatal (partition counts only grow, and shrinking means data loss), but a
            # mismatch changes key->partition mapping, so say it loudly.
            print(
                f"warning: topic {name} exists with {len(existing[name].partitions)} "
                f"partitions, not {partitions}",
                file=sys.stderr,
            )
    missing = [t for t in topics if t not in existing]
    if not missing:
        print(f"topics already present: {' '.join(topics)}", file=sys.stderr)
        return 0
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        operation_timeout=30,
        request_timeout=30,
    )
    rc = 0
    for name, fut in futures.items():
        try:
            fut.result()
            print(f"created topic {name} ({partitions} partitions)", file=sys.stderr)
        except KafkaException as exc:
            err = exc.args[0]
            # Another process may have created it between our list and create: that is success.
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            print(f"failed to create topic {name}: {exc}", file=sys.stderr)
            rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--timeout", type=float, default=90)
    w.add_argument("--pid", type=int)
    c = sub.add_parser("create")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--partitions", type=int, default=12)
    c.add_argument("topics", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "wait":
        return wait(args.bootstrap, args.timeout, args.pid)
    return create(args.bootstrap, args.partitions, args.topics)


if __name__ == "__main__":
    sys.exit(main())
