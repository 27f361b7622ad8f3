"""Renders envoy/envoy.yaml.tmpl with this mesh's ports and paths."""

from __future__ import annotations

import argparse
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(envoy_port: int, admin_port: int, orchestrator_port: int, access_log: Path) -> str:
    template = string.Template((ROOT / "envoy" / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        ENVOY_HOST="127.0.0.1",
        ENVOY_PORT=envoy_port,
        ENVOY_ADMIN_PORT=admin_port,
        ORCHESTRATOR_PORT=orchestrator_port,
        PROTOSET=ROOT / "gen" / "servicecall.protoset",
        ENVOY_ACCESS_LOG=access_log,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--orchestrator-port", type=int, required=True)
    parser.add_argument("--access-log", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(render(args.port, args.admin_port, args.orchestrator_port, args.access_log))


if __name__ == "__main__":
    main()
