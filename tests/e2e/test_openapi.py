"""The OpenAPI document: served by Envoy, and true to the JSON face Envoy actually serves."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.render_envoy import OPENAPI, OPENAPI_MAX_BYTES, render
from meshctl.layout import Layout
from tests.conftest import KeyRing

ROOT = Path(__file__).resolve().parents[2]
SERVICES = (
    "servicecall.v1.ServiceCallService",
    "servicecall.v1.ScheduleService",
    "servicecall.v1.QueueService",
)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(dict(response.headers)), response.read()
    except urllib.error.HTTPError as e:
        return e.code, _lower(dict(e.headers)), e.read()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI.read_text())
    return loaded


@pytest.fixture(scope="module")
def files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "gen" / "servicecall.protoset").read_bytes()
    )
    return {f.name: f for f in fds.file}


def _message(
    files: dict[str, descriptor_pb2.FileDescriptorProto], full_name: str
) -> descriptor_pb2.DescriptorProto:
    package, _, name = full_name.lstrip(".").rpartition(".")
    for f in files.values():
        if f.package == package:
            for m in f.message_type:
                if m.name == name:
                    return m
    raise KeyError(full_name)


def _rules(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> list[tuple[descriptor_pb2.MethodDescriptorProto, str, str]]:
    """(method, HTTP verb, path template) of every google.api.http rule of the public services."""
    out = []
    for f in files.values():
        for service in f.service:
            if f"{f.package}.{service.name}" not in SERVICES:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                assert verb is not None
                out.append((method, verb, getattr(rule, verb)))
    return out


def _json_path(
    template: str,
    request: descriptor_pb2.DescriptorProto,
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> str:
    """The template with each field path in JSON names: `{schedule.schedule_id}` names a field
    of the request's `schedule` message."""

    def json_names(path: str) -> str:
        message, out = request, []
        for name in path.split("."):
            field = next(f for f in message.field if f.name == name)
            out.append(field.json_name)
            if field.type_name:
                message = _message(files, field.type_name)
        return ".".join(out)

    return re.sub(r"\{([\w.]+)\}", lambda m: "{" + json_names(m.group(1)) + "}", template)


# -- served by Envoy -------------------------------------------------------------------------


def test_envoy_serves_the_generated_document(running_mesh: Layout) -> None:
    status, headers, body = http("GET", f"{running_mesh.public_url}/openapi.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == OPENAPI.read_bytes()
    # No API key needed for the document; other methods on its path are just unrouted.
    status, _, body = http("POST", f"{running_mesh.public_url}/openapi.json", b"{}")
    assert status == 404
    assert json.loads(body) == {"code": 5, "message": "no such route"}


def test_the_rendered_envoy_config_validates(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(18080, 18901, [18051], tmp_path / "access.log"))
    envoy = ROOT / ".venv" / "bin" / "envoy"
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert OPENAPI.stat().st_size < OPENAPI_MAX_BYTES


# -- true to the JSON face ---------------------------------------------------------------------


def test_it_describes_exactly_the_public_service_routes(
    document: dict[str, Any], files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    expected = {
        (_json_path(path, _message(files, method.input_type), files), verb)
        for method, verb, path in _rules(files)
    }
    described = {(path, verb) for path, ops in document["paths"].items() for verb in ops}
    assert described == expected
    assert {
        "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:cancel",
        "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:reschedule",
        "/v1/tenants/{tenantId}/service-calls/{serviceCallId}:run",
        "/v1/tenants/{tenantId}/schedules/{scheduleId}:pause",
        "/v1/tenants/{tenantId}/schedules/{scheduleId}",
    } <= {path for path, _ in described}
    text = json.dumps(document)
    for internal in ("internal", "Timer", "Executor", "Envelope"):
        assert internal not in text


def test_field_names_are_the_json_names_envoy_prints(
    document: dict[str, Any], files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    definitions = document["definitions"]
    for definition, message in (
        ("v1ServiceCall", ".servicecall.v1.ServiceCall"),
        ("v1HttpRequest", ".servicecall.v1.HttpRequest"),
        ("v1RetryPolicy", ".servicecall.v1.RetryPolicy"),
        ("v1Attempt", ".servicecall.v1.Attempt"),
        ("v1ListServiceCallsResponse", ".servicecall.v1.ListServiceCallsResponse"),
        ("v1Schedule", ".servicecall.v1.Schedule"),
        ("v1ListSchedulesResponse", ".servicecall.v1.ListSchedulesResponse"),
    ):
        fields = {f.json_name for f in _message(files, message).field}
        assert set(definitions[definition]["properties"]) == fields, definition
        assert all("_" not in name for name in fields)
    submit_body = definitions["ServiceCallServiceSubmitServiceCallBody"]["properties"]
    assert set(submit_body) == {"serviceCall", "delay"}


def test_list_query_parameters_are_every_filter(
    document: dict[str, Any], files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    operation = document["paths"]["/v1/tenants/{tenantId}/service-calls"]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    request = _message(files, ".servicecall.v1.ListServiceCallsRequest")
    assert set(query) == {f.json_name for f in request.field} - {"tenantId"}
    assert query["states"]["type"] == "array"
    assert query["states"]["collectionFormat"] == "multi"  # states=A&states=B
    assert "SUCCEEDED" in query["states"]["items"]["enum"]
    assert query["createTimeStart"]["format"] == "date-time"
    assert query["pageSize"]["type"] == "integer"


def test_security_and_error_shapes(document: dict[str, Any]) -> None:
    assert document["securityDefinitions"] == {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": document["securityDefinitions"]["ApiKey"]["description"],
        }
    }
    assert "Bearer" in document["securityDefinitions"]["ApiKey"]["description"]
    assert document["security"] == [{"ApiKey": []}]
    status = document["definitions"]["rpcStatus"]["properties"]
    assert set(status) == {"code", "message", "details"}
    for path, operations in document["paths"].items():
        for verb, operation in operations.items():
            for code in ("400", "401", "404", "default"):
                ref = operation["responses"][code]["schema"]["$ref"]
                assert ref == "#/definitions/rpcStatus", (path, verb, code)
    submit = document["paths"]["/v1/tenants/{tenantId}/service-calls"]["post"]["responses"]
    assert {"200", "201", "409"} <= set(submit)
    assert "Location" in submit["201"]["headers"]
    create = document["paths"]["/v1/tenants/{tenantId}/schedules"]["post"]["responses"]
    assert {"201", "409"} <= set(create)
    assert "Location" in create["201"]["headers"]


def test_documented_statuses_and_shapes_are_what_envoy_answers(
    running_mesh: Layout, key_ring: KeyRing, document: dict[str, Any]
) -> None:
    tenant = "openapi-doc"
    base = f"{running_mesh.public_url}/v1/tenants/{tenant}/service-calls"
    auth = {"authorization": f"Bearer {key_ring.for_tenant(tenant)}"}
    json_headers = {**auth, "content-type": "application/json"}
    body = {"serviceCall": {"request": {"url": "http://127.0.0.1:9/never"}}, "delay": "3600s"}

    status, headers, raw = http("POST", base, json.dumps(body).encode(), json_headers)
    assert status == 201, raw
    created = json.loads(raw)
    assert headers["location"] == f"/v1/tenants/{tenant}/service-calls/{created['serviceCallId']}"
    assert set(created) <= set(document["definitions"]["v1ServiceCall"]["properties"])

    # Errors the orchestrator makes, and errors the edge makes itself, have one shape.
    for method, url, payload, hdrs, want in (
        ("GET", base, None, {}, 401),
        ("GET", f"{base}/{created['serviceCallId']}x", None, auth, 400),
        ("GET", f"{base}?pageSize=notanumber", None, auth, 400),
        ("GET", f"{base}?states=NOPE", None, auth, 400),
        ("POST", base, b"{not json", json_headers, 400),
        ("POST", base, b'{"delay": "soon"}', json_headers, 400),
        ("POST", f"{base}/{created['serviceCallId']}:explode", b"{}", json_headers, 404),
        ("DELETE", base, None, auth, 404),
        # A legal HTTP header name that no gRPC metadata key may have.
        ("GET", base, None, {**auth, "x#y": "1"}, 400),
    ):
        status, headers, raw = http(method, url, payload, hdrs)
        assert status == want, (method, url, payload, status, raw)
        assert headers["content-type"].startswith("application/json"), (url, headers)
        error = json.loads(raw)
        assert isinstance(error["code"], int) and error["code"] > 0, error
        assert isinstance(error["message"], str) and error["message"], error

    # gRPC framing headers from a JSON client are dropped, not passed on to break the call.
    for junk in ({"x-junk-bin": "!!!"}, {"grpc-timeout": "soon"}):
        status, _, raw = http("GET", base, None, {**auth, **junk})
        assert status == 200, (junk, raw)


def test_native_grpc_errors_from_the_edge_stay_grpc(running_mesh: Layout) -> None:
    # The JSON error bodies above are for the JSON face only; a gRPC client gets a plain status.
    with grpc.insecure_channel(f"127.0.0.1:{running_mesh.envoy_port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/servicecall.internal.v1.TimerService/ArmTimer"
        )
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.value.details() == "no such route"
