"""Renders envoy/envoy.yaml.tmpl with this mesh's ports and paths."""

from __future__ import annotations

import argparse
import json
import string
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "gen" / "openapi" / "servicecall.swagger.json"
# Envoy refuses a direct_response body above the route config's
# max_direct_response_body_size_bytes (4 KiB unless raised); the document is ~32 KiB, and the
# dashboard's files are served the same way.
OPENAPI_MAX_BYTES = 1 << 20

# The dashboard (docs/dashboard.md): static files that Envoy itself answers with, read once at
# start, so serving the page needs no process of its own. Every file in the directory is served
# under DASHBOARD_PATH; only these kinds are allowed, so a stray file fails the render loudly.
DASHBOARD = ROOT / "dashboard"
DASHBOARD_PATH = "/dashboard/"
DASHBOARD_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page runs only its own files and talks only to its own origin (the API and Prometheus
# behind the same Envoy); no inline script, so markup built from data cannot run as code.
DASHBOARD_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    # Envoy gives a direct response no validator (ETag, Last-Modified), so a browser could
    # keep an old copy after an upgrade for as long as its heuristics like: ask every time
    # (the files are a few KiB, and Envoy answers from memory).
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

# The gRPC code named in the JSON body of an error the edge answers itself, by HTTP status,
# so that such a body reads like one the orchestrator sent. The transcoder's own local replies
# (unparseable JSON, a bad query value) are 400s: the client's input was invalid.
LOCAL_REPLY_GRPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED
    431: 8,  # RESOURCE_EXHAUSTED
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
_OTHER_ERROR_CODE = 2  # UNKNOWN: any other 4xx/5xx the edge makes up


def _status_filter(op: str, code: int) -> dict[str, object]:
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": code, "runtime_key": "unused"}}
        }
    }


def local_reply_mappers() -> list[dict[str, object]]:
    """local_reply_config mappers: first match wins, so the catch-all (>= 400) comes last."""
    # Native gRPC keeps its errors in grpc-status/grpc-message. A transcoded JSON request
    # looks like gRPC by the time the transcoder fails it (it has already rewritten
    # content-type), but it carries x-envoy-original-path, which the transcoder sets.
    json_face = {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            # A GET usually has no content-type at all.
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": "x-envoy-original-path", "present_match": True}
                    }
                },
            ]
        }
    }

    def mapper(status_filter: dict[str, object], grpc_code: int) -> dict[str, object]:
        return {
            "filter": {"and_filter": {"filters": [status_filter, json_face]}},
            "body_format_override": {
                "json_format": {"code": grpc_code, "message": "%LOCAL_REPLY_BODY%"}
            },
        }

    return [
        *(
            mapper(_status_filter("EQ", http), grpc)
            for http, grpc in LOCAL_REPLY_GRPC_CODES.items()
        ),
        mapper(_status_filter("GE", 400), _OTHER_ERROR_CODE),
    ]


def _yaml_list(items: list[dict[str, object]], indent: int) -> str:
    # JSON is YAML; one flow-style item per line keeps the rendered file readable.
    return "\n".join(f"{' ' * indent}- {json.dumps(item)}" for item in items)


def orchestrator_endpoints(ports: Sequence[int], indent: int = 14) -> str:
    """The orchestrator cluster's lb_endpoints: one per process serving the API."""
    if not ports:
        raise ValueError("the orchestrator cluster needs at least one port")
    return _yaml_list(
        [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
            for p in ports
        ],
        indent,
    )


def _get(path: str, exact: bool = True) -> dict[str, object]:
    return {
        "path" if exact else "prefix": path,
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
    }


def _see_other(path: str, location: str) -> dict[str, object]:
    # A direct_response, not a `redirect` action: every route here either goes to the
    # orchestrator or is answered by Envoy itself (tests/unit/test_k8s_manifests.py).
    return {
        "match": _get(path),
        "direct_response": {"status": 302},
        "response_headers_to_add": [
            {
                "header": {"key": "location", "value": location},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def dashboard_files(directory: Path = DASHBOARD) -> list[Path]:
    """The dashboard's files, each checked to be of a served kind and small enough."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    for file in files:
        if file.suffix not in DASHBOARD_TYPES:
            raise ValueError(f"{file}: only {', '.join(DASHBOARD_TYPES)} files are served")
        if file.stat().st_size > OPENAPI_MAX_BYTES:
            raise ValueError(f"{file} is larger than Envoy serves ({OPENAPI_MAX_BYTES} bytes)")
    if directory / "index.html" not in files:
        raise ValueError(f"{directory} has no index.html")
    return files


def dashboard_routes() -> list[dict[str, object]]:
    """GET / and /dashboard lead to /dashboard/, which is index.html; each other file is
    served at /dashboard/<name>, answered by Envoy from the file it read at start."""

    def serve(path: str, file: Path) -> dict[str, object]:
        headers = {"content-type": DASHBOARD_TYPES[file.suffix], **DASHBOARD_HEADERS}
        return {
            "match": _get(path),
            "direct_response": {"status": 200, "body": {"filename": str(file)}},
            "response_headers_to_add": [
                {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                for k, v in headers.items()
            ],
        }

    files = dashboard_files()
    return [
        _see_other("/", DASHBOARD_PATH),
        _see_other(DASHBOARD_PATH.rstrip("/"), DASHBOARD_PATH),
        serve(DASHBOARD_PATH, DASHBOARD / "index.html"),
        *(serve(DASHBOARD_PATH + f.name, f) for f in files if f.name != "index.html"),
    ]


def prometheus_routes(prometheus_port: int) -> list[dict[str, object]]:
    """Prometheus's read-only query API at /prometheus/api/v1/query[_range], for the
    dashboard's mesh health; nothing else of Prometheus (its UI, admin or write paths) is
    exposed. None when the mesh runs no Prometheus (port 0): the page then says so."""
    if not prometheus_port:
        return []
    return [
        {
            "match": _get("/prometheus/api/v1/query", exact=False),
            "route": {
                "cluster": "prometheus",
                "prefix_rewrite": "/api/v1/query",
                "timeout": "10s",
            },
        }
    ]


def prometheus_clusters(prometheus_port: int) -> list[dict[str, object]]:
    if not prometheus_port:
        return []
    return [
        {
            "name": "prometheus",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "prometheus",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": prometheus_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    ]


def render(
    envoy_port: int,
    admin_port: int,
    orchestrator_ports: Sequence[int],
    access_log: Path,
    prometheus_port: int = 0,
) -> str:
    """The local Envoy's config; `prometheus_port` 0 means this mesh runs no Prometheus."""
    size = OPENAPI.stat().st_size
    if size > OPENAPI_MAX_BYTES:
        raise ValueError(f"{OPENAPI} is {size} bytes; Envoy serves at most {OPENAPI_MAX_BYTES}")
    template = string.Template((ROOT / "envoy" / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        ENVOY_HOST="127.0.0.1",
        ENVOY_PORT=envoy_port,
        ENVOY_ADMIN_PORT=admin_port,
        ORCHESTRATOR_ENDPOINTS=orchestrator_endpoints(orchestrator_ports),
        PROTOSET=ROOT / "gen" / "servicecall.protoset",
        ENVOY_ACCESS_LOG=access_log,
        OPENAPI=OPENAPI,
        OPENAPI_MAX_BYTES=OPENAPI_MAX_BYTES,
        LOCAL_REPLY_MAPPERS=_yaml_list(local_reply_mappers(), indent=20),
        DASHBOARD_ROUTES=_yaml_list(dashboard_routes(), indent=24),
        PROMETHEUS_ROUTES=_yaml_list(prometheus_routes(prometheus_port), indent=24),
        PROMETHEUS_CLUSTERS=_yaml_list(prometheus_clusters(prometheus_port), indent=4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument(
        "--orchestrator-port",
        type=int,
        action="append",
        required=True,
        help="a port of a process serving the API; repeat it for each API worker",
    )
    parser.add_argument("--access-log", type=Path, required=True)
    parser.add_argument(
        "--prometheus-port", type=int, default=0, help="Prometheus to route to; 0: none"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(
        render(
            args.port,
            args.admin_port,
            args.orchestrator_port,
            args.access_log,
            args.prometheus_port,
        )
    )


if __name__ == "__main__":
    main()
