"""API_WORKERS: the settings, the ports each layer derives from them, and the supervisor that
keeps the worker processes running (with a stand-in child: a few lines of Python)."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest
import yaml

from gateway.render_envoy import render
from mesh.config import ConfigError, Env
from meshctl.layout import Layout
from orchestrator.config import OrchestratorConfig
from orchestrator.entrypoints.api_workers import ApiWorkers, worker_ports

KEY = {"MESH_SECRET_KEY": base64.b64encode(bytes(32)).decode()}


def config(**env: str) -> OrchestratorConfig:
    return OrchestratorConfig.from_env(Env(KEY | env))


def test_one_process_serves_the_api_unless_told_otherwise() -> None:
    assert config().api_workers == 1
    assert config().api_worker_ports == ()


def test_workers_take_consecutive_ports_a_hundred_above_the_main_one() -> None:
    assert config(API_WORKERS="3").api_worker_ports == (50151, 50152)
    assert config(API_WORKERS="2", GRPC_PORT="20151").api_worker_ports == (20251,)
    assert config(API_WORKERS="2", API_WORKER_BASE_PORT="6000").api_worker_ports == (6000,)
    assert worker_ports(50051, 1) == ()


@pytest.mark.parametrize(
    "env",
    [
        {"API_WORKERS": "0"},
        {"API_WORKERS": "many"},
        {"API_WORKERS": "2", "API_WORKER_BASE_PORT": "50051"},
        {"API_WORKERS": "3", "API_WORKER_BASE_PORT": "65535"},
    ],
)
def test_bad_settings_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config(**env)


def test_the_local_mesh_tells_the_orchestrator_and_envoy_the_same_ports(tmp_path: Path) -> None:
    layout = Layout.test(3).with_api_workers(3)
    assert layout.orchestrator_ports == (17151, 17251, 17252)
    orchestrator = OrchestratorConfig.from_env(Env(layout.service_env_for("orchestrator")))
    assert (orchestrator.common.grpc_port, *orchestrator.api_worker_ports) == (
        layout.orchestrator_ports
    )
    # Clear of every other port of every test slot's mesh and chaos mesh (tests/conftest.py,
    # bench/chaos.py: steps of 1000 and 500).
    others = {
        port - shift
        for slot in range(8)
        for shift in (0, 500)
        for port in (
            Layout.test(slot).pg_port,
            Layout.test(slot).kafka_port,
            Layout.test(slot).kafka_controller_port,
            Layout.test(slot).orchestrator_port,
            Layout.test(slot).scheduler_port,
            Layout.test(slot).executor_port,
            Layout.test(slot).envoy_port,
            Layout.test(slot).envoy_admin_port,
        )
    }
    assert not set(layout.orchestrator_ports[1:]) & others

    rendered = yaml.safe_load(render(1, 2, layout.orchestrator_ports, tmp_path / "access.log"))
    (cluster,) = rendered["static_resources"]["clusters"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert tuple(ports) == layout.orchestrator_ports
    assert cluster["health_checks"][0]["grpc_health_check"]


def _child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def _read(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _gone(pid: str) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def _lines(path: Path, count: int, timeout: float = 20.0) -> list[str]:
    async def enough() -> list[str]:
        while True:
            lines = _read(path)
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(enough(), timeout)


async def test_a_worker_that_exits_is_started_again(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # Each start appends its port, then the child exits at once, as a crash would.
    script = f"import os; open({str(starts)!r}, 'a').write(os.environ['GRPC_PORT'] + '\\n')"
    workers = ApiWorkers([7001, 7002], _child(script), {}, first_backoff_s=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(workers.run(stop))
    lines = await _lines(starts, 6)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert set(lines) == {"7001", "7002"}
    assert lines.count("7001") >= 2 and lines.count("7002") >= 2


async def test_stopping_stops_every_worker_and_waits_for_it(tmp_path: Path) -> None:
    started = tmp_path / "started"
    stopped = tmp_path / "stopped"
    script = (
        "import os, signal, sys, time\n"
        f"def bye(*_):\n    open({str(stopped)!r}, 'a').write('bye\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        f"open({str(started)!r}, 'a').write(os.environ['API_WORKER_INDEX'] + '\\n')\n"
        "while True: time.sleep(1)\n"
    )
    workers = ApiWorkers([7001, 7002], _child(script), {})
    stop = asyncio.Event()
    running = asyncio.create_task(workers.run(stop))
    assert sorted(await _lines(started, 2)) == ["1", "2"]
    stop.set()
    await asyncio.wait_for(running, 10)
    # Both got SIGTERM (a graceful stop) and had exited by the time run() returned.
    assert _read(stopped) == ["bye", "bye"]


async def test_a_worker_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    started = tmp_path / "started"
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(started)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "while True: time.sleep(1)\n"
    )
    workers = ApiWorkers([7001], _child(script), {}, stop_timeout_s=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(workers.run(stop))
    (pid,) = await _lines(started, 1)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert _gone(pid)
