"""The local mesh's Prometheus: its scrape configuration, generated from the Layout, and a
client for the little of its HTTP API that meshctl and the tests use."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

from meshctl.layout import ROOT, Layout

RULES = ROOT / "prometheus" / "rules.yml"
# Short, so that a test sees a change within seconds; a production Prometheus uses 15-30 s.
SCRAPE_INTERVAL = "5s"


def render_config(layout: Layout) -> str:
    """prometheus.yml for `layout`: one job per service listing every process's /metrics port
    (the orchestrator's API workers included), Envoy's admin /stats/prometheus, Prometheus
    itself, and the repository's recording rules."""
    jobs: list[dict[str, Any]] = [
        {
            "job_name": service,
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{port}" for port in ports],
                    "labels": {"service": service},
                }
            ],
        }
        for service, ports in layout.metrics_targets().items()
    ]
    jobs.append(
        {
            "job_name": "envoy",
            "metrics_path": "/stats/prometheus",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{layout.envoy_admin_port}"],
                    "labels": {"service": "envoy"},
                }
            ],
        }
    )
    jobs.append(
        {
            "job_name": "prometheus",
            "static_configs": [{"targets": [f"127.0.0.1:{layout.prometheus_port}"]}],
        }
    )
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": "4s",
            "evaluation_interval": SCRAPE_INTERVAL,
            "external_labels": {"mesh": layout.run_dir.name},
        },
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }
    header = "# Written by meshctl (meshctl/prometheus.py) on every start; edits are overwritten.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def api(layout: Layout, path: str, **query: str) -> Any:
    """GET one of Prometheus' /api/v1 endpoints; returns its `data`."""
    url = f"{layout.prometheus_url}/api/v1/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus answered {body!r} to {url}")
    return body["data"]


def ready(layout: Layout) -> bool:
    try:
        with urllib.request.urlopen(f"{layout.prometheus_url}/-/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def target_health(layout: Layout) -> dict[str, str]:
    """Each active target's scrape URL and Prometheus's word for it: "up", "down", or
    "unknown" (not scraped yet: the first seconds after a start)."""
    data = api(layout, "targets", state="active")
    return {t["scrapeUrl"]: str(t["health"]) for t in data["activeTargets"]}
