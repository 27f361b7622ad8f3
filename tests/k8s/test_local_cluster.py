"""The whole mesh on the local Kubernetes node (k8s/overlays/local), through Envoy's node port:
both overlays pass a server-side dry run; JSON (curl) and gRPC (grpcurl) submit, get, list and
cancel; calls fire once each with two executors and schedulers; an orchestrator pod deleted
mid-load loses no acknowledged call."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.k8s.conftest import FACTS, ROOT, TIMINGS, Node, Sink, eventually

# Cold, the node's Kubernetes build (~17 min) and the images (~5 min) run inside the first test.
pytestmark = pytest.mark.timeout(3600)

NODE_PORT = 30080  # k8s/overlays/kind/envoy-nodeport.yaml
GRPCURL = str(ROOT / ".run" / "bin" / "grpcurl")
SERVICE = "servicecall.v1.ServiceCallService"


@dataclass(frozen=True)
class Api:
    """The public API through Envoy's node port, as one tenant."""

    node: Node
    tenant: str
    key: str

    @property
    def address(self) -> str:
        return f"{self.node.ip}:{NODE_PORT}"

    @property
    def calls_path(self) -> str:
        return f"/v1/tenants/{self.tenant}/service-calls"

    def curl(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request with curl (as a user would); fails on a non-2xx answer."""
        argv = ["curl", "-sS", "--fail-with-body", "--max-time", "30", "-X", method]
        argv += ["-H", f"authorization: Bearer {self.key}", "-H", "content-type: application/json"]
        if body is not None:
            argv += ["-d", json.dumps(body)]
        result = subprocess.run(
            [*argv, f"http://{self.address}{path}"],
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        assert result.returncode == 0, f"curl {method} {path}: {result.stdout}{result.stderr}"
        return json.loads(result.stdout)

    def grpcurl(self, method: str, request: dict[str, Any]) -> Any:
        """One gRPC call with grpcurl, by reflection through Envoy (h2c on the same port)."""
        argv = [GRPCURL, "-plaintext", "-max-time", "30", "-H", f"authorization: Bearer {self.key}"]
        argv += ["-d", json.dumps({"tenant_id": self.tenant, **request}), self.address]
        result = subprocess.run(
            [*argv, f"{SERVICE}/{method}"],
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        assert result.returncode == 0, f"grpcurl {method}: {result.stdout}{result.stderr}"
        return json.loads(result.stdout)

    def submit(self, body: dict[str, Any]) -> tuple[int, Any]:
        """A JSON submit from the test process (many of them): (status, body); 0 when the
        request never got an answer (connection refused or reset, timeout)."""
        request = urllib.request.Request(
            f"http://{self.address}{self.calls_path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (OSError, ValueError) as e:
            return 0, repr(e)

    def states(self, tag: str) -> dict[str, str]:
        """Every call with `tag`: id -> state (List, all pages)."""
        states: dict[str, str] = {}
        token = ""
        while True:
            query = f"?tags={tag}&pageSize=1000" + (f"&pageToken={token}" if token else "")
            request = urllib.request.Request(
                f"http://{self.address}{self.calls_path}{query}",
                headers={"authorization": f"Bearer {self.key}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                page = json.loads(response.read())
            states.update({c["serviceCallId"]: c["state"] for c in page["serviceCalls"]})
            token = page.get("nextPageToken", "")
            if not token:
                return states


@pytest.fixture(scope="session")
def api(mesh: Node, sink: Sink) -> Api:
    """A tenant and its key (made in the orchestrator pod, as docs/kubernetes.md says), with
    the executor allowed to call the sink: exactly the node's address, nothing more. The
    executor and scheduler run one replica each until the scale-out test."""
    tenant = f"k8s-{uuid.uuid4().hex[:8]}"
    mesh.ns("scale", "deployment/executor", "deployment/scheduler", "--replicas=1")
    patch = {"data": {"EGRESS_ALLOW_CIDRS": f"{mesh.ip}/32"}}
    mesh.ns("patch", "configmap/servicecall-config", "--type=merge", "-p", json.dumps(patch))
    # The executor reads its environment at start only.
    mesh.ns("rollout", "restart", "deployment/executor")
    mesh.wait_rolled_out("deployment/executor", "deployment/scheduler")
    mesh.wait_settled("executor", "scheduler")
    key = mesh.ns(
        "exec",
        "deployment/orchestrator",
        "--",
        "python",
        "-m",
        "orchestrator",
        "admin",
        "create-key",
        tenant,
        "--create-tenant",
    ).strip()
    assert key.startswith("sck_"), key
    return Api(mesh, tenant, key)


def test_both_overlays_pass_a_server_side_dry_run(
    server_dry_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    for overlay, result in server_dry_runs.items():
        assert result.returncode == 0, f"{overlay}: {result.stdout}{result.stderr}"
        assert "deployment.apps/orchestrator serverside-applied (server dry run)" in result.stdout


def test_submit_get_list_cancel_with_curl_and_grpcurl(api: Api, sink: Sink) -> None:
    run = uuid.uuid4().hex[:8]
    by_json = api.curl(
        "POST",
        api.calls_path,
        {"serviceCall": {"request": {"url": sink.url(f"/json/{run}")}, "tags": [run]}},
    )
    by_grpc = api.grpcurl(
        "SubmitServiceCall",
        {"service_call": {"request": {"url": sink.url(f"/grpc/{run}")}, "tags": [run]}},
    )
    json_id, grpc_id = by_json["serviceCallId"], by_grpc["service_call_id"]

    def state_of(call_id: str) -> str:
        state: str = api.curl("GET", f"{api.calls_path}/{call_id}")["state"]
        return state

    eventually(
        lambda: state_of(json_id) == state_of(grpc_id) == "SUCCEEDED", 120, "both calls to succeed"
    )
    assert sink.count(f"/json/{run}") == sink.count(f"/grpc/{run}") == 1
    full = api.grpcurl("GetServiceCall", {"service_call_id": json_id, "view": "FULL"})
    assert full["state"] == "SUCCEEDED" and full["attempts"], full

    listed = api.curl("GET", f"{api.calls_path}?tags={run}&states=SUCCEEDED")
    assert {c["serviceCallId"] for c in listed["serviceCalls"]} == {json_id, grpc_id}
    listed = api.grpcurl("ListServiceCalls", {"tags": [run]})
    assert {c["service_call_id"] for c in listed["service_calls"]} == {json_id, grpc_id}

    # Calls due in an hour, cancelled through each face: they end CANCELED and never fire.
    later = {"request": {"url": sink.url(f"/never/{run}")}, "tags": [f"{run}-later"]}
    first = api.curl("POST", api.calls_path, {"serviceCall": later, "delay": "3600s"})
    second = api.grpcurl("SubmitServiceCall", {"service_call": later, "delay": "3600s"})
    assert first["state"] == second["state"] == "SCHEDULED"
    cancelled = api.curl("POST", f"{api.calls_path}/{first['serviceCallId']}:cancel", {})
    assert cancelled["state"] == "CANCELED"
    cancelled = api.grpcurl("CancelServiceCall", {"service_call_id": second["service_call_id"]})
    assert cancelled["state"] == "CANCELED"
    assert set(api.states(f"{run}-later").values()) == {"CANCELED"}
    assert sink.count(f"/never/{run}") == 0


def _submit_burst(api: Api, sink: Sink, prefix: str, tag: str, count: int) -> dict[str, str]:
    """`count` calls due in 3 s, path prefix/i each: path -> call id."""

    def one(i: int) -> tuple[str, str]:
        path = f"{prefix}/{i}"
        body = {"serviceCall": {"request": {"url": sink.url(path)}, "tags": [tag]}, "delay": "3s"}
        status, answer = api.submit(body)
        assert status == 201, (status, answer)
        return path, answer["serviceCallId"]

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(count)))


def _assert_each_fired_once_and_succeeded(
    api: Api, sink: Sink, tag: str, ids: dict[str, str], timeout: float
) -> None:
    paths = set(ids)
    eventually(
        lambda: paths <= {a.path for a in sink.snapshot()}, timeout, f"{len(paths)} calls to fire"
    )
    eventually(
        lambda: set(api.states(tag).values()) == {"SUCCEEDED"}, 60, "every call to be SUCCEEDED"
    )
    states = api.states(tag)
    assert set(states) == set(ids.values())
    counts = Counter(a.path for a in sink.snapshot() if a.path in paths)
    assert [p for p, n in counts.items() if n != 1] == [], "fired more than once"


def test_two_executors_and_schedulers_fire_each_call_once(api: Api, sink: Sink) -> None:
    mesh = api.node
    mesh.ns("scale", "deployment/executor", "deployment/scheduler", "--replicas=2")
    mesh.wait_rolled_out("deployment/executor", "deployment/scheduler")
    mesh.wait_settled("executor", "scheduler")
    executors = {p["status"]["podIP"] for p in mesh.ready_pods("executor")}
    assert len(executors) == 2 and len(mesh.ready_pods("scheduler")) == 2

    run = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    ids = _submit_burst(api, sink, f"/burst/{run}", run, 200)
    _assert_each_fired_once_and_succeeded(api, sink, run, ids, timeout=180)
    TIMINGS["200 calls submitted, fired, SUCCEEDED"] = time.monotonic() - t0
    # Both executors took part (each pod sends from its own address; the bridge does not NAT).
    senders = {a.client for a in sink.snapshot() if a.path.startswith(f"/burst/{run}/")}
    assert senders == executors


@dataclass
class Submitter:
    """Submits calls one after another until stopped; a failed submit is retried with the same
    idempotency key, as a client would. Records what was acknowledged: path -> call id."""

    api: Api
    sink: Sink
    prefix: str
    tag: str
    acknowledged: dict[str, str]
    failures: Counter[str]
    stop: threading.Event

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            path = f"{self.prefix}/{i}"
            body = {
                "serviceCall": {
                    "request": {"url": self.sink.url(path)},
                    "tags": [self.tag],
                    "idempotencyKey": f"{self.tag}-{i}",
                },
                "delay": "2s",
            }
            deadline = time.monotonic() + 60
            while True:
                status, answer = self.api.submit(body)
                if status in (200, 201):
                    self.acknowledged[path] = answer["serviceCallId"]
                    break
                self.failures[str(status)] += 1
                assert time.monotonic() < deadline, f"{path} never acknowledged: {answer}"
                time.sleep(0.2)
            i += 1


def test_deleting_an_orchestrator_pod_mid_load_loses_nothing(api: Api, sink: Sink) -> None:
    mesh = api.node
    mesh.ns("scale", "deployment/orchestrator", "--replicas=2")
    mesh.wait_rolled_out("deployment/orchestrator")
    victim = mesh.ready_pods("orchestrator")[0]["metadata"]["name"]

    run = uuid.uuid4().hex[:8]
    submitter = Submitter(api, sink, f"/kill/{run}", run, {}, Counter(), threading.Event())
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            submitter.run()
        except BaseException as e:  # reported by the test thread below
            errors.append(e)

    thread = threading.Thread(target=guarded)
    thread.start()
    try:
        eventually(lambda: len(submitter.acknowledged) >= 30 or bool(errors), 60, "30 submits")
        mesh.ns("delete", "pod", victim, "--timeout=60s", timeout=70)
        before = len(submitter.acknowledged)
        mesh.wait_rolled_out("deployment/orchestrator")
        # Load goes on after the replacement is Ready, so both old and new pods served.
        eventually(
            lambda: len(submitter.acknowledged) >= before + 30 or bool(errors),
            60,
            "30 more submits after the pod was replaced",
        )
    finally:
        submitter.stop.set()
        thread.join(timeout=90)
    assert not errors, errors
    assert victim not in {p["metadata"]["name"] for p in mesh.ready_pods("orchestrator")}
    ids = dict(submitter.acknowledged)
    FACTS.append(
        f"orchestrator pod deleted mid-load: {len(ids)} calls acknowledged, failed submits "
        f"retried with the same key: {dict(submitter.failures) or 'none'}"
    )
    _assert_each_fired_once_and_succeeded(api, sink, run, ids, timeout=120)


@pytest.fixture(scope="session", autouse=True)
def _no_call_fired_twice(sink: Sink) -> Iterator[None]:
    """At the very end, after every test waited: still no path reached the sink twice (a late
    redelivery would show here)."""
    yield
    twice = [p for p, n in Counter(a.path for a in sink.snapshot()).items() if n > 1]
    assert twice == [], twice
