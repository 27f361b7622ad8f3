"""The local mesh's Prometheus configuration: every process's /metrics port is scraped, the
services are told the same ports, and the recording rules the dashboard queries exist."""

from __future__ import annotations

from pathlib import Path

import yaml

from mesh.config import Env
from meshctl.layout import ROOT, Layout
from meshctl.prometheus import RULES, render_config
from orchestrator.config import OrchestratorConfig

DASHBOARD_RECORDS = {
    "servicecall:lateness_seconds:p50_5m",
    "servicecall:lateness_seconds:p99_5m",
    "servicecall:calls_finished:rate1m",
    "servicecall:calls_submitted:rate1m",
    "servicecall:consumer_lag:sum",
}


def test_every_process_of_the_mesh_is_a_scrape_target() -> None:
    layout = Layout.test(2).with_api_workers(3)
    config = yaml.safe_load(render_config(layout))
    targets = {
        job["job_name"]: (job.get("metrics_path", "/metrics"), job["static_configs"][0]["targets"])
        for job in config["scrape_configs"]
    }
    assert targets["orchestrator"] == (
        "/metrics",
        ["127.0.0.1:18161", "127.0.0.1:18261", "127.0.0.1:18262"],
    )
    assert targets["scheduler"] == ("/metrics", ["127.0.0.1:18162"])
    assert targets["executor"] == ("/metrics", ["127.0.0.1:18163"])
    assert targets["envoy"] == ("/stats/prometheus", [f"127.0.0.1:{layout.envoy_admin_port}"])
    assert config["rule_files"] == [str(RULES)]
    assert config["global"]["scrape_interval"] == "5s"


def test_the_services_serve_metrics_where_prometheus_looks() -> None:
    layout = Layout.test(2).with_api_workers(3)
    orchestrator = OrchestratorConfig.from_env(Env(layout.service_env_for("orchestrator")))
    assert (orchestrator.metrics.port, *orchestrator.api_worker_metrics_ports) == (
        layout.orchestrator_metrics_ports
    )
    for service in ("scheduler", "executor"):
        env = layout.service_env_for(service)
        assert env["METRICS_PORT"] == str(layout.metrics_port_of(service))
    # Clear of every other port of every test slot's mesh (steps of 1000).
    others = {
        getattr(Layout.test(slot), name)
        for slot in range(8)
        for name in (
            "pg_port",
            "kafka_port",
            "kafka_controller_port",
            "orchestrator_port",
            "scheduler_port",
            "executor_port",
            "envoy_port",
            "envoy_admin_port",
            "prometheus_port",
        )
    }
    ports = {p for ports in layout.metrics_targets().values() for p in ports}
    assert len(ports) == 5
    assert not ports & others
    assert not ports & set(layout.orchestrator_ports)


def test_benchmark_meshes_serve_no_metrics_and_run_no_prometheus() -> None:
    bench = Layout(ROOT / ".run" / "x", 1, 2, 3, 4, 5, 6, 7, 8)
    assert bench.metrics_targets() == {}
    assert bench.prometheus_port == 0
    assert bench.service_env_for("executor")["METRICS_PORT"] == "0"


def test_the_recording_rules_the_dashboard_queries_exist() -> None:
    rules = yaml.safe_load(Path(RULES).read_text())
    records = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert set(records) == DASHBOARD_RECORDS
    assert (
        "servicecall_executor_lateness_seconds_bucket"
        in records["servicecall:lateness_seconds:p99_5m"]
    )
    assert "by (outcome)" in records["servicecall:calls_finished:rate1m"]
    assert "by (topic)" in records["servicecall:consumer_lag:sum"]


def test_kubernetes_pods_announce_the_port_they_serve_metrics_on() -> None:
    base = ROOT / "k8s" / "base"
    config = yaml.safe_load((base / "config.yaml").read_text())["data"]
    assert config["METRICS_HOST"] == "0.0.0.0"
    for service in ("orchestrator", "scheduler", "executor"):
        objects = list(yaml.safe_load_all((base / f"{service}.yaml").read_text()))
        (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == config["METRICS_PORT"]
        assert str(ports["metrics"]) == config["METRICS_PORT"]
    example = yaml.safe_load((base / "prometheus-scrape.yaml").read_text())
    scrape = yaml.safe_load(example["data"]["prometheus.yml"])
    (job,) = scrape["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
