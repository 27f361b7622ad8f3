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
# max_direct_response_body_size_bytes (4 KiB unless raised); the document is ~32 KiB.
OPENAPI_MAX_BYTES = 1 << 20

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


def render(
    envoy_port: int, admin_port: int, orchestrator_ports: Sequence[int], access_log: Path
) -> str:
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(render(args.port, args.admin_port, args.orchestrator_port, args.access_log))


if __name__ == "__main__":
    main()
