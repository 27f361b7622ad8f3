"""Where one local mesh lives: its run directory, ports and settings."""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.entrypoints.api_workers import worker_ports

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("orchestrator", "scheduler", "executor")


def default_api_workers() -> int:
    """`make up`'s API worker count: one per core, at most 4. Postgres, Kafka and the other
    services share the cores, so more processes than cores would only take turns."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True, slots=True)
class Layout:
    run_dir: Path
    pg_port: int
    kafka_port: int
    kafka_controller_port: int
    orchestrator_port: int
    scheduler_port: int
    executor_port: int
    envoy_port: int
    envoy_admin_port: int
    topic_prefix: str = "servicecall."
    pg_fsync: bool = True
    # Processes serving the orchestrator's public API (orchestrator/entrypoints/
    # api_workers.py): the main one on orchestrator_port, the others on `orchestrator_ports[1:]`.
    api_workers: int = 1
    # Prometheus scraping this mesh (issue 15); 0: this mesh runs none (benchmarks, chaos).
    prometheus_port: int = 0
    # Each service's /metrics port (METRICS_PORT); 0: not served. The orchestrator's API
    # workers serve theirs on `orchestrator_metrics_ports[1:]` (orchestrator/main.py).
    orchestrator_metrics_port: int = 0
    scheduler_metrics_port: int = 0
    executor_metrics_port: int = 0
    # Extra environment for the services (tests tune leads and leases through it).
    service_env: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def dev(cls) -> Layout:
        env = os.environ
        return cls(
            run_dir=ROOT / ".run" / "dev",
            pg_port=int(env.get("PG_PORT", 55432)),
            kafka_port=int(env.get("KAFKA_PORT", 59092)),
            kafka_controller_port=int(env.get("KAFKA_CONTROLLER_PORT", 59093)),
            orchestrator_port=int(env.get("ORCHESTRATOR_PORT", 50051)),
            scheduler_port=int(env.get("SCHEDULER_PORT", 50052)),
            executor_port=int(env.get("EXECUTOR_PORT", 50053)),
            envoy_port=int(env.get("ENVOY_PORT", 8080)),
            envoy_admin_port=int(env.get("ENVOY_ADMIN_PORT", 9901)),
            api_workers=int(env.get("API_WORKERS") or default_api_workers()),
            prometheus_port=int(env.get("PROMETHEUS_PORT", 9090)),
            orchestrator_metrics_port=int(env.get("ORCHESTRATOR_METRICS_PORT", 9401)),
            scheduler_metrics_port=int(env.get("SCHEDULER_METRICS_PORT", 9402)),
            executor_metrics_port=int(env.get("EXECUTOR_METRICS_PORT", 9403)),
        )

    @classmethod
    def test(cls, slot: int = 0) -> Layout:
        """Ports and a run dir of its own, so tests run beside a `make up` mesh; `slot` > 0
        moves every port by 1000 × slot so that several test sessions can run at once.

        All below 32768, outside Linux's ephemeral range: the tests start servers again and
        again, and a port that an outgoing connection happens to use makes a bind fail."""
        shift = 1000 * slot
        return cls(
            run_dir=ROOT / ".run" / ("test" if slot == 0 else f"test-{slot}"),
            pg_port=25532 - shift,
            kafka_port=29192 - shift,
            kafka_controller_port=29193 - shift,
            orchestrator_port=20151 - shift,
            scheduler_port=20152 - shift,
            executor_port=20153 - shift,
            envoy_port=28180 - shift,
            envoy_admin_port=28181 - shift,
            topic_prefix="servicecall.",
            pg_fsync=False,
            prometheus_port=29190 - shift,
            orchestrator_metrics_port=20161 - shift,
            scheduler_metrics_port=20162 - shift,
            executor_metrics_port=20163 - shift,
        )

    def with_service_env(self, **values: str) -> Layout:
        return replace(self, service_env=(*self.service_env, *values.items()))

    def with_api_workers(self, count: int) -> Layout:
        return replace(self, api_workers=count)

    @property
    def orchestrator_ports(self) -> tuple[int, ...]:
        """Every port serving the orchestrator's public API, the main process's first; the
        workers' follow from orchestrator_port as the orchestrator works them out, so the
        test slots' shifts move them too."""
        return (self.orchestrator_port, *worker_ports(self.orchestrator_port, self.api_workers))

    @property
    def orchestrator_metrics_ports(self) -> tuple[int, ...]:
        """The /metrics ports of the orchestrator's processes, the main one's first (none when
        its METRICS_PORT is 0): each API worker serves its own, as orchestrator/main.py
        derives them."""
        port = self.orchestrator_metrics_port
        return (port, *worker_ports(port, self.api_workers)) if port else ()

    def metrics_targets(self) -> dict[str, tuple[int, ...]]:
        """Every process's /metrics port, by service: what Prometheus scrapes."""
        ports = {
            "orchestrator": self.orchestrator_metrics_ports,
            "scheduler": (self.scheduler_metrics_port,) if self.scheduler_metrics_port else (),
            "executor": (self.executor_metrics_port,) if self.executor_metrics_port else (),
        }
        return {service: found for service, found in ports.items() if found}

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/servicecall"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy_port}"

    @property
    def python(self) -> str:
        return sys.executable

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def metrics_port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_metrics_port"))

    def infra_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PG_DIR": str(self.run_dir / "pg"),
            "PG_PORT": str(self.pg_port),
            "PG_FSYNC": "on" if self.pg_fsync else "off",
            "KAFKA_DIR": str(self.run_dir / "kafka"),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "PROM_DIR": str(self.run_dir / "prometheus"),
            "PROM_PORT": str(self.prometheus_port),
        }

    def secret_key(self) -> str:
        """This mesh's sealing key (mesh/secrets.py), made once and kept in its run dir: a
        local mesh needs no operator step, and a restart can still open what it sealed."""
        path = self.run_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.b64encode(os.urandom(32)).decode())
            path.chmod(0o600)
        return path.read_text().strip()

    def service_env_for(self, service: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
            "MESH_RUN_DIR": str(self.run_dir),
            "GRPC_PORT": str(self.port_of(service)),
            "METRICS_PORT": str(self.metrics_port_of(service)),
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TOPIC_PREFIX": self.topic_prefix,
            "MESH_SECRET_KEY": self.secret_key(),
            # One replica of each service locally: a fixed member id lets a restart resume.
            "KAFKA_GROUP_INSTANCE_ID": f"{service}-1",
            # The local mesh calls local sinks; a production executor keeps loopback blocked.
            "EGRESS_ALLOW_CIDRS": "127.0.0.0/8,::1/128",
            **({"API_WORKERS": str(self.api_workers)} if service == "orchestrator" else {}),
            **dict(self.service_env),
        }
