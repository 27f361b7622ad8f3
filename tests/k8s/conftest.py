"""k8s fixtures: the local node of `make k8s-up`, the images, the mesh applied to it, a sink.

Not collected by `make test` (pyproject's testpaths leave tests/k8s out): `make test-k8s` runs
it. From nothing: `scripts/k8s/node.sh up` (exit 3, a machine that cannot run a node: skip),
`make images`, the server-side dry runs of both overlays, then the local overlay for real.
The node is stopped at the end if this session started it; KEEP_K8S=1 leaves it (and the
mesh) running for debugging.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".run" / "k8s" / "env"
LOGS = ROOT / ".run" / "test-k8s"
NAMESPACE = "servicecall"
EXIT_UNSUPPORTED = 3  # scripts/k8s/node.sh: this machine cannot run a node
# The figures printed at the end of the session (pytest_terminal_summary).
TIMINGS: dict[str, float] = {}
# What a test saw that a reader of the run wants to know (also printed at the end).
FACTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("k8s timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what:<40} {seconds:7.1f} s")
    for fact in FACTS:
        terminalreporter.write_line(fact)


def run_logged(name: str, argv: list[str], timeout: float, **kw: Any) -> float:
    """Runs a setup step with its output in .run/test-k8s/NAME.log; fails with the log's tail.
    Returns how long it took."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False, **kw
        )
    elapsed = time.monotonic() - t0
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"{shlex.join(argv)} exited {result.returncode} ({log}):\n{tail}")
    return elapsed


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value
    return env


@dataclass(frozen=True)
class Node:
    """The running node, as `.run/k8s/env` describes it."""

    env: dict[str, str]

    @property
    def ip(self) -> str:
        return self.env["K8S_NODE_IP"]

    def kubectl(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.env["K8S_KUBECTL"], "--kubeconfig", self.env["KUBECONFIG"], *args]
        result = subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def ns(self, *args: str, timeout: float = 120) -> str:
        return self.kubectl("-n", NAMESPACE, *args, timeout=timeout).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ns(*args, "-o", "json"))

    def wait_rolled_out(self, *names: str, timeout: int = 300) -> None:
        for name in names:
            self.ns("rollout", "status", name, f"--timeout={timeout}s", timeout=timeout + 10)

    def wait_settled(self, *apps: str, timeout: float = 120) -> None:
        """Waits until each app's pods are all Ready and none is still terminating: `rollout
        status` returns while old pods still drain, and an executor that drains still holds
        Kafka partitions (its held attempts are redelivered when it leaves)."""
        for app in apps:

            def settled(app: str = app) -> bool:
                pods = self.json("get", "pods", "-l", f"app.kubernetes.io/name={app}")["items"]
                return len(pods) == len(self.ready_pods(app)) > 0

            eventually(settled, timeout, f"the {app} pods to settle")

    def save_logs(self, into: Path) -> None:
        """Every container's log (and the previous one's, after a restart) and the events."""
        into.mkdir(parents=True, exist_ok=True)
        (into / "events.txt").write_text(self.ns("get", "events", "--sort-by=.lastTimestamp"))
        (into / "pods.txt").write_text(self.ns("get", "pods", "-o", "wide"))
        for pod in self.json("get", "pods")["items"]:
            name = pod["metadata"]["name"]
            for previous in ("", "--previous"):
                args = ["logs", name, "--all-containers", "--prefix", "--timestamps"]
                result = self.kubectl("-n", NAMESPACE, *args, previous, check=False)
                if result.returncode == 0 and result.stdout:
                    (into / f"{name}{previous}.log").write_text(result.stdout)

    def ready_pods(self, app: str) -> list[dict[str, Any]]:
        pods = self.json("get", "pods", "-l", f"app.kubernetes.io/name={app}")["items"]
        return [
            p
            for p in pods
            if p["metadata"].get("deletionTimestamp") is None
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    """The node of `make k8s-up`: started here (and stopped at the end) unless one runs."""
    already_up = ENV_FILE.exists()
    if not already_up:
        LOGS.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        result = subprocess.run(
            ["scripts/k8s/node.sh", "up"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3000,
            check=False,
        )
        (LOGS / "node-up.log").write_text(result.stdout + result.stderr)
        if result.returncode == EXIT_UNSUPPORTED:
            pytest.skip(f"this machine cannot run a Kubernetes node: {result.stderr.strip()}")
        if result.returncode != 0:
            pytest.fail(f"scripts/k8s/node.sh up exited {result.returncode}:\n{result.stderr}")
        TIMINGS["node up (make k8s-up)"] = time.monotonic() - t0
    node = Node(read_env(ENV_FILE))
    try:
        yield node
    finally:
        if os.environ.get("KEEP_K8S") == "1" or already_up:
            print(f"\nleaving the node running: source {ENV_FILE}")
        else:
            TIMINGS["node down (make k8s-down)"] = run_logged(
                "node-down", ["scripts/k8s/node.sh", "down"], timeout=300
            )


@pytest.fixture(scope="session")
def images(node: Node) -> None:
    """Builds what changed and loads every image into the node (make images)."""
    TIMINGS["images (make images)"] = run_logged("images", ["make", "images"], timeout=3000)


@pytest.fixture(scope="session")
def namespace(node: Node) -> None:
    """The Namespace first, from nothing: a server-side apply (or dry run) of objects in a
    namespace that does not exist fails. A mesh left by an earlier KEEP_K8S=1 run goes first:
    Jobs and StatefulSets are immutable, and the test starts from nothing."""
    if node.kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        node.kubectl("delete", "namespace", NAMESPACE, "--timeout=180s", timeout=200)
    node.kubectl("apply", "--server-side", "-f", "k8s/base/namespace.yaml")


@pytest.fixture(scope="session")
def server_dry_runs(node: Node, namespace: None) -> dict[str, subprocess.CompletedProcess[str]]:
    """`kubectl apply --dry-run=server` of both overlays, before anything is applied for real
    (a later dry run of the kind overlay would hit the local one's immutable Job templates)."""
    return {
        overlay: node.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "-k",
            f"k8s/overlays/{overlay}",
            check=False,
        )
        for overlay in ("kind", "local")
    }


@pytest.fixture(scope="session")
def mesh(
    node: Node,
    images: None,
    server_dry_runs: dict[str, subprocess.CompletedProcess[str]],
) -> Iterator[Node]:
    """The local overlay applied and everything Ready: every Deployment and StatefulSet rolled
    out, every Job complete."""
    secrets = dict(os.environ, **node.env)
    run_logged("create-secrets", ["k8s/overlays/kind/create-secrets.sh"], 60, env=secrets)
    t0 = time.monotonic()
    node.kubectl("apply", "--server-side", "-k", "k8s/overlays/local")
    names = node.ns("get", "deployment,statefulset", "-o", "name").split()
    node.wait_rolled_out(*names)
    jobs = node.ns("get", "job", "-o", "name").split()
    node.ns("wait", "--for=condition=complete", *jobs, "--timeout=300s", timeout=310)
    TIMINGS["apply to all Ready"] = time.monotonic() - t0
    yield node
    # Before the node (and with it every pod log) goes: .run/test-k8s/pods/ for a post-mortem.
    node.save_logs(LOGS / "pods")


@dataclass(frozen=True)
class Arrival:
    path: str
    client: str  # the sender's address: each pod has its own (the CNI bridge does not NAT)


@dataclass
class Sink:
    """An HTTP server on the node's address, which the pods route to: every request is
    recorded and answered 200."""

    host: str
    arrivals: list[Arrival] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for a in self.arrivals if a.path == path)

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)


@pytest.fixture(scope="session")
def sink(node: Node) -> Iterator[Sink]:
    sink = Sink(node.ip)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            sink.record(Arrival(self.path, self.client_address[0]))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((node.ip, 0), Handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


def eventually(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Polls `condition` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)
