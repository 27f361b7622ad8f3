"""The image recipes of `make images` (scripts/k8s/images.sh, k8s/image/), checked offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGES_SH = ROOT / "scripts" / "k8s" / "images.sh"
KAFKA_ENTRYPOINT = ROOT / "k8s" / "image" / "kafka" / "entrypoint.sh"


def images_sh(*args: str) -> str:
    return subprocess.run(
        ["bash", str(IMAGES_SH), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
    ).stdout


def test_mesh_image_is_built_from_the_dockerfile_itself() -> None:
    """One recipe for Docker users and for `make images`: nothing to drift."""
    script = IMAGES_SH.read_text()
    (build,) = re.findall(r"^build_mesh\(\) \{\n(.*?)^\}", script, re.M | re.S)
    assert "buildah bud" in build
    assert '-f "$SC_REPO_ROOT/Dockerfile"' in build
    assert "--build-arg PYTHON_IMAGE=" in build  # Debian's python3.11 for python:3.11-slim
    assert "ARG PYTHON_IMAGE=" in (ROOT / "Dockerfile").read_text()


def test_every_file_the_dockerfile_copies_keys_the_mesh_image() -> None:
    """An edit to anything the image copies must rebuild it, never reuse the old archive."""
    keyed = set(images_sh("context").split())
    sources = [
        src
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources
    for src in sources:
        path = ROOT / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            assert str(file.relative_to(ROOT)) in keyed, file
    # ... and nothing the Dockerfile cannot see (the kafka/postgres recipes key their own images).
    assert not any(name.startswith(("k8s/image/kafka/", "k8s/image/postgres/")) for name in keyed)


def kafka_settings_of_make_up() -> dict[str, str]:
    """The broker settings scripts/infra/kafka.sh writes for `make up` (fixed values only)."""
    script = (ROOT / "scripts" / "infra" / "kafka.sh").read_text()
    (props,) = re.findall(r"<<PROPS\n(.*?)\nPROPS\n", script, re.S)
    settings = dict(
        line.split("=", 1) for line in props.splitlines() if line and not line.startswith("#")
    )
    return {k: v for k, v in settings.items() if "$" not in v}


def kind_kafka_env() -> dict[str, str]:
    docs = yaml.safe_load_all((ROOT / "k8s" / "overlays" / "kind" / "kafka.yaml").read_text())
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def run_kafka_entrypoint(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Runs the image's entrypoint with a stand-in `java`; returns the java command lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "java-calls"
    (bin_dir / "java").write_text(f'#!/bin/sh\necho "$*" >>{calls}\n')
    (bin_dir / "java").chmod(0o755)
    subprocess.run(
        ["bash", str(KAFKA_ENTRYPOINT)],
        check=True,
        timeout=30,
        env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "CONFIG_DIR": str(tmp_path)},
    )
    return calls.read_text().splitlines()


def test_kafka_image_turns_the_kind_env_into_make_ups_broker_settings(tmp_path: Path) -> None:
    env = kind_kafka_env()
    data = tmp_path / "data"
    env["KAFKA_LOG_DIRS"] = str(data)
    calls = run_kafka_entrypoint(tmp_path, env)
    props = dict(
        line.split("=", 1)
        for line in (tmp_path / "server.properties").read_text().splitlines()
        if not line.startswith("#")
    )
    # The same broker as `make up`'s wherever neither sets an address or a path...
    local = kafka_settings_of_make_up()
    assert {k: props.get(k) for k in local} == local
    # ... and the cluster's addresses from the manifest.
    assert props["advertised.listeners"] == "PLAINTEXT://kafka:9092"
    assert props["listeners"] == "PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093"
    assert props["log.dirs"] == str(data)
    assert "heap.opts" not in props  # KAFKA_HEAP_OPTS is for the JVM
    assert " -Xms256m -Xmx512m " in f" {calls[0]} "
    format_call, start_call = calls
    assert "kafka.tools.StorageTool format" in format_call
    assert f"-t {env['CLUSTER_ID']} -c {tmp_path}/server.properties" in format_call
    assert start_call.endswith(f"kafka.Kafka {tmp_path}/server.properties")


def test_kafka_image_formats_its_volume_only_once(tmp_path: Path) -> None:
    env = kind_kafka_env()
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.properties").write_text("cluster.id=x\n")
    env["KAFKA_LOG_DIRS"] = str(data)
    (start_call,) = run_kafka_entrypoint(tmp_path, env)
    assert "kafka.Kafka" in start_call


def test_kafka_image_refuses_to_start_without_a_cluster_id(tmp_path: Path) -> None:
    env = kind_kafka_env()
    del env["CLUSTER_ID"]
    with pytest.raises(subprocess.CalledProcessError):
        run_kafka_entrypoint(tmp_path, env)


@pytest.mark.skipif(
    not Path("/usr/lib/postgresql/15/bin/initdb").exists() or os.geteuid() != 0,
    reason="needs Debian's postgresql-15 and root (to run it as an unprivileged user)",
)
def test_postgres_image_entrypoint_initializes_a_password_protected_database() -> None:
    """The entrypoint run as the image runs it (unprivileged, Debian's postgres 15), for real."""
    # Not pytest's tmp_path: its parents are private to root, and postgres runs as nobody.
    with tempfile.TemporaryDirectory(prefix="pg-image-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        run_postgres_entrypoint(tmp_path)


def run_postgres_entrypoint(tmp_path: Path) -> None:
    pgdata = tmp_path / "data" / "pgdata"
    (tmp_path / "data").mkdir()
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    entrypoint = tmp_path / "entrypoint.sh"
    # The image's path for the socket; here a private directory instead.
    entrypoint.write_text(
        (ROOT / "k8s" / "image" / "postgres" / "entrypoint.sh")
        .read_text()
        .replace(
            "unix_socket_directories=/var/run/postgresql", f"unix_socket_directories={socket_dir}"
        )
        .replace("listen_addresses='*'", "listen_addresses='' -c port=5999")
    )
    subprocess.run(["chown", "-R", "nobody:nogroup", str(tmp_path)], check=True)
    env = {
        "PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin",
        "PGDATA": str(pgdata),
        "POSTGRES_USER": "servicecall",
        "POSTGRES_DB": "servicecall",
        "POSTGRES_PASSWORD": "pw",
    }
    server = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", str(entrypoint)],
        env=env,
    )
    try:
        query = [
            "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "/usr/lib/postgresql/15/bin/psql", "-h", str(socket_dir), "-p", "5999",
            "-U", "servicecall", "-d", "servicecall", "-Atc",
        ]  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([*query, "select 1"], check=False, capture_output=True)
            if ready.returncode == 0 or server.poll() is not None:
                break
            time.sleep(0.1)
        assert server.poll() is None, "postgres exited"
        hba = (pgdata / "pg_hba.conf").read_text()
        assert "host all all 0.0.0.0/0 scram-sha-256" in hba
        answer = subprocess.run(
            [*query, "select current_user, current_database(), rolsuper from pg_roles "
             "where rolname = current_user"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert answer.strip() == "servicecall|servicecall|t"
    finally:
        server.terminate()
        server.wait(timeout=30)
