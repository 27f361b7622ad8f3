"""The edge's dashboard and Prometheus routes as gateway/render_envoy.py renders them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.render_envoy import DASHBOARD, DASHBOARD_TYPES, dashboard_files, render


def routes_and_clusters(prometheus_port: int) -> tuple[list[Any], dict[str, Any]]:
    config = yaml.safe_load(render(1, 2, [3], Path("/dev/null"), prometheus_port))
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    return host["routes"], clusters


def by_path(routes: list[Any]) -> dict[str, Any]:
    return {r["match"]["path"]: r for r in routes if "path" in r["match"]}


def test_every_dashboard_file_is_served_with_its_type_and_headers() -> None:
    routes, _ = routes_and_clusters(0)
    served = by_path(routes)
    files = dashboard_files()
    assert {f.name for f in files} >= {"index.html", "dashboard.js", "api.js", "dashboard.css"}
    for file in files:
        path = "/dashboard/" if file.name == "index.html" else f"/dashboard/{file.name}"
        route = served[path]
        assert route["direct_response"] == {"status": 200, "body": {"filename": str(file)}}
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert headers["content-type"] == DASHBOARD_TYPES[file.suffix]
        assert headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in headers["content-security-policy"]
        assert route["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]


def test_root_and_bare_path_lead_to_the_dashboard() -> None:
    routes, _ = routes_and_clusters(0)
    served = by_path(routes)
    for path in ("/", "/dashboard"):
        assert served[path]["direct_response"] == {"status": 302}
        (location,) = served[path]["response_headers_to_add"]
        assert location["header"] == {"key": "location", "value": "/dashboard/"}
    # Still before the catch-all, which must stay last.
    assert routes[-1]["match"] == {"prefix": "/"}
    assert "direct_response" in routes[-1]


def test_prometheus_is_routed_only_when_the_mesh_runs_one() -> None:
    routes, clusters = routes_and_clusters(0)
    assert "prometheus" not in clusters
    assert not [r for r in routes if r.get("route", {}).get("cluster") == "prometheus"]

    routes, clusters = routes_and_clusters(29190)
    (route,) = [r for r in routes if r.get("route", {}).get("cluster") == "prometheus"]
    # The read-only query API only, rewritten to Prometheus's own path.
    assert route["match"]["prefix"] == "/prometheus/api/v1/query"
    assert route["route"]["prefix_rewrite"] == "/api/v1/query"
    endpoint = clusters["prometheus"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 29190,
    }


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "notes.txt").write_text("stray")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        dashboard_files(tmp_path)
    assert DASHBOARD.is_dir()


def test_a_directory_without_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("")
    with pytest.raises(ValueError, match=r"index\.html"):
        dashboard_files(tmp_path)
