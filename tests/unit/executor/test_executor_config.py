"""The executor's configuration from the environment, and the room rules of its code."""

from __future__ import annotations

import ast
import base64
import ipaddress
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from executor.config import ExecutorConfig
from mesh.config import ConfigError, Env

EXECUTOR = Path(__file__).resolve().parents[3] / "executor"
KEY = {"MESH_SECRET_KEY": base64.b64encode(bytes(32)).decode()}


def test_defaults() -> None:
    config = ExecutorConfig.from_env(Env(KEY))
    assert config.common.grpc_port == 50053
    assert config.common.service_name == "executor"
    assert config.consumer_group == "executor"
    assert config.max_in_flight == 512
    assert (config.max_in_flight_per_tenant, config.max_in_flight_per_host) == (256, 128)
    assert config.max_held == 32768
    assert config.max_held_bytes == 256 * 1024 * 1024
    # Fair sharing: one tenant's 10k-call burst is still held whole; bytes in quarters.
    assert config.max_held_per_tenant == 16384
    assert config.max_held_bytes_per_tenant == 64 * 1024 * 1024
    assert config.kafka_linger_ms == 5.0
    assert config.nice == 0
    assert config.started_after == timedelta(seconds=1)
    assert config.report_defer == timedelta(seconds=2)
    assert config.gc_gen0_threshold == 50_000
    assert config.max_response_bytes == 1024 * 1024
    assert config.default_snippet_bytes == 1024
    assert config.egress_allowlist == ()
    assert config.executor_id  # hostname-pid
    assert config.executor_id.rsplit("-", 1)[1].isdigit()
    assert (config.finished_remembered, config.finished_bytes) == (100_000, 64 * 1024 * 1024)
    assert (config.max_response_headers, config.max_response_header_bytes) == (100, 65536)
    assert (config.dns_threads, config.dns_lookups_per_tenant) == (8, 2)
    assert config.dns_timeout_s == 5.0


def test_values_from_the_environment() -> None:
    config = ExecutorConfig.from_env(
        Env(
            {
                **KEY,
                "GRPC_PORT": "6000",
                "EXECUTOR_ID": "exec-a",
                "EXECUTOR_GROUP": "g",
                "MAX_IN_FLIGHT": "8",
                "MAX_IN_FLIGHT_PER_TENANT": "3",
                "MAX_IN_FLIGHT_PER_HOST": "2",
                "MAX_HELD": "100",
                "MAX_HELD_BYTES": "5000",
                "MAX_RESPONSE_BYTES": "4096",
                "MAX_SNIPPET_BYTES": "64",
                "EGRESS_ALLOW_CIDRS": "127.0.0.0/8, ::1/128",
                "DRAIN_TIMEOUT_S": "2.5",
                "EXECUTOR_NICE": "-5",
                "EXECUTOR_RT_PRIORITY": "7",
                "REPORT_STARTED_AFTER_S": "0",
                "REPORT_DEFER_MAX_S": "0",
                "FINISHED_ATTEMPTS_REMEMBERED": "10",
                "FINISHED_ATTEMPTS_BYTES": "20000",
                "MAX_RESPONSE_HEADERS": "50",
                "MAX_RESPONSE_HEADER_BYTES": "8192",
                "DNS_THREADS": "4",
                "DNS_LOOKUPS_PER_TENANT": "1",
                "DNS_TIMEOUT_S": "1.5",
            }
        )
    )
    assert config.common.grpc_port == 6000
    assert (config.executor_id, config.consumer_group) == ("exec-a", "g")
    assert (config.max_in_flight, config.max_response_bytes) == (8, 4096)
    assert (config.max_in_flight_per_tenant, config.max_in_flight_per_host) == (3, 2)
    assert config.max_held == 100
    assert config.max_held_bytes == 5000
    assert config.default_snippet_bytes == 64
    assert config.egress_allowlist == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.drain_timeout_s == 2.5
    assert config.nice == -5
    assert config.rt_priority == 7
    assert config.started_after is None  # 0: Started before every request
    assert config.report_defer is None  # 0: reports never wait
    assert (config.finished_remembered, config.finished_bytes) == (10, 20000)
    assert (config.max_response_headers, config.max_response_header_bytes) == (50, 8192)
    assert (config.dns_threads, config.dns_lookups_per_tenant, config.dns_timeout_s) == (4, 1, 1.5)


def test_signing_keys_file_defaults_to_the_run_dir(tmp_path: Path) -> None:
    assert ExecutorConfig.from_env(Env(KEY)).signing_keys_file is None
    in_run_dir = ExecutorConfig.from_env(Env({**KEY, "MESH_RUN_DIR": str(tmp_path)}))
    assert in_run_dir.signing_keys_file == tmp_path / "webhook-signing-keys.json"
    explicit = ExecutorConfig.from_env(
        Env({**KEY, "MESH_RUN_DIR": str(tmp_path), "WEBHOOK_SIGNING_KEYS_FILE": "/k.json"})
    )
    assert explicit.signing_keys_file == Path("/k.json")


def test_a_malformed_signing_keys_file_fails_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"acme": ["whsec_AAAA"]}')
    with pytest.raises(ConfigError):
        ExecutorConfig.from_env(Env({**KEY, "WEBHOOK_SIGNING_KEYS_FILE": str(path)}))


@pytest.mark.parametrize(
    "env",
    [
        {"EGRESS_ALLOW_CIDRS": "127.0.0.0/8,nonsense"},
        {"MAX_IN_FLIGHT": "0"},
        {"MAX_IN_FLIGHT_PER_TENANT": "0"},
        {"MAX_IN_FLIGHT_PER_HOST": "-1"},
        {"MAX_IN_FLIGHT": "10", "MAX_HELD": "5"},
        {"MAX_RESPONSE_BYTES": "-1"},
        {"MAX_HELD_BYTES": "0"},
        {"MAX_IN_FLIGHT": "many"},
        {"DRAIN_TIMEOUT_S": "-1"},
        {"KAFKA_LINGER_MS": "-1"},
        {"EXECUTOR_NICE": "-21"},
        {"EXECUTOR_NICE": "20"},
        {"EXECUTOR_RT_PRIORITY": "-1"},
        {"EXECUTOR_RT_PRIORITY": "100"},
        {"REPORT_STARTED_AFTER_S": "-1"},
        {"REPORT_STARTED_AFTER_S": "11"},
        {"REPORT_DEFER_MAX_S": "-1"},
        {"REPORT_DEFER_MAX_S": "11"},
        {"EXECUTOR_GC_GEN0": "0"},
        {"FINISHED_ATTEMPTS_REMEMBERED": "0"},
        {"FINISHED_ATTEMPTS_BYTES": "-1"},
        {"MAX_RESPONSE_HEADERS": "0"},
        {"MAX_RESPONSE_HEADER_BYTES": "0"},
        {"DNS_THREADS": "0"},
        {"DNS_LOOKUPS_PER_TENANT": "0"},
        {"DNS_THREADS": "2", "DNS_LOOKUPS_PER_TENANT": "3"},
        {"DNS_TIMEOUT_S": "0"},
        {"MESH_SECRET_KEY": ""},
        {"MESH_SECRET_KEY": "not base64!"},
        {"MESH_SECRET_KEY": base64.b64encode(bytes(16)).decode()},
    ],
)
def test_bad_values_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        ExecutorConfig.from_env(Env({**KEY, **env}))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((EXECUTOR / "domain").glob("*.py")), ids=lambda p: p.name)
def test_domain_imports_only_the_standard_library(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or name.startswith("executor.domain"), name


def test_the_handler_does_not_know_the_http_library() -> None:
    for name in (
        "service_layer/attempts.py",
        "service_layer/timing.py",
        "ports.py",
        "service_layer/registry.py",
    ):
        imported = {n.split(".")[0] for n in _imports(EXECUTOR / name)}
        assert not imported & {"aiohttp", "httptools"}, name
