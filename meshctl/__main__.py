"""`python -m meshctl up|down|status|logs` for the local dev mesh."""

from __future__ import annotations

import sys
import time

from meshctl import mesh
from meshctl.layout import Layout


def main(argv: list[str]) -> int:
    layout = Layout.dev()
    command = argv[0] if argv else "status"
    if command == "up":
        started = time.monotonic()
        mesh.up(layout)
        print(f"mesh is up in {time.monotonic() - started:.1f}s")
        print(f"  public API (JSON + gRPC via Envoy): {layout.public_url}")
        print(f"  dashboard:         {layout.public_url}/dashboard/")
        print(f"  orchestrator gRPC: 127.0.0.1:{layout.orchestrator_port}")
        if layout.api_workers > 1:
            ports = ", ".join(str(p) for p in layout.orchestrator_ports[1:])
            print(
                f"    + API workers:   {ports} (API_WORKERS={layout.api_workers}; Envoy uses all)"
            )
        print(f"  scheduler gRPC:    127.0.0.1:{layout.scheduler_port}")
        print(f"  executor gRPC:     127.0.0.1:{layout.executor_port}")
        print(f"  Envoy admin:       http://127.0.0.1:{layout.envoy_admin_port}")
        if layout.prometheus_port:
            print(f"  Prometheus:        {layout.prometheus_url} (targets: /targets)")
        for service, metrics_ports in layout.metrics_targets().items():
            listed = ", ".join(f"127.0.0.1:{port}" for port in metrics_ports)
            print(f"  {service + ' metrics:':19}{listed}")
        print(f"  Postgres:          {layout.database_url}")
        print(f"  Kafka:             {layout.kafka_bootstrap}")
        print(f"  logs:              {layout.run_dir / 'logs'}")
        print(f"  demo API key:      {layout.run_dir / 'demo.key'} (tenant 'demo')")
    elif command == "down":
        stopped = mesh.down(layout)
        print(
            f"stopped: {', '.join(stopped) or 'no mesh processes'}; "
            "Prometheus, Kafka and Postgres stopped"
        )
    elif command == "status":
        for name, state in mesh.status(layout):
            print(f"{name:13} {state}")
    elif command == "logs":
        for path in mesh.log_files(layout):
            print(path)
    else:
        print(f"usage: python -m meshctl up|down|status|logs (not {command!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
