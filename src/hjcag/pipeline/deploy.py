"""Roll a packaged model out to the serving resources of k8s/ (the pipeline's deploy step).

Targets (docs/serving-operations.md, "Rolling out a new model"):

* ``torchserve``: the base Deployment ``hjcag-torchserve`` whose init container copies the archive out of a model
  image. The patch sets that image (built from the archive outside the pipeline, e.g. by CI), ``MODEL_SHA256``
  (the init container refuses an archive with another hash) and the ``hjcag.io/model-version`` annotation.
* ``torchserve-pvc``: the ``pvc`` overlay. The archive is copied to ``<model store>/<version>/hjcag.mar`` on the
  model-store PVC, and the patch points the model-store mount's ``subPath`` at that directory.
* ``kserve``: the InferenceService ``hjcag``. The archive and the KServe config.properties go to
  ``<model store>/kserve/<version>/{model-store,config}/`` and the patch sets ``storageUri`` to
  ``pvc://hjcag-model-store/kserve/<version>``.

Every change is to the pod template (or the InferenceService), so Kubernetes rolls the pods with no downtime
(``maxUnavailable: 0``). The pipeline's ServiceAccount may only get/patch these two objects (k8s/components/
pipeline-rbac). The patch bodies are pure functions of the archive record, tested without a cluster.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hjcag.errors import ConfigError, HjcagError

TARGETS = ("torchserve", "torchserve-pvc", "kserve")
NAMESPACE = "hjcag"
DEPLOYMENT = "hjcag-torchserve"
INIT_CONTAINER = "fetch-model"
SERVING_CONTAINER = "torchserve"
MODEL_STORE_MOUNT = "/home/model-server/model-store"  # where the torchserve container mounts the model store
INFERENCE_SERVICE = "hjcag"
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_STORE_PVC = "hjcag-model-store"
KSERVE_PREFIX = "kserve"
VERSION_ANNOTATION = "hjcag.io/model-version"
ARCHIVE = "hjcag.mar"
KSERVE_CONFIG = Path("k8s/overlays/kserve/model-storage/config/config.properties")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def version_label(record: dict[str, Any]) -> str:
    """The annotation value: ``<registered model>/<version>`` (e.g. ``hjcag-meld/7``)."""
    return f"{record.get('model') or 'hjcag'}/{record['version']}"


def _checked_version(record: dict[str, Any]) -> str:
    version = str(record.get("version") or "")
    if not _SAFE.match(version):
        raise ConfigError(f"archive version '{version}' cannot name a directory; package with a plain version.")
    return version


def torchserve_image_patch(record: dict[str, Any], model_image: str) -> dict[str, Any]:
    """Strategic-merge patch of the Deployment: init container image + MODEL_SHA256, and the annotation.

    Lists merge by name (initContainers, env), so only these fields change."""
    if not model_image:
        raise ConfigError("the torchserve target needs model_image: the image holding /model-store/hjcag.mar "
                          "(serving/Dockerfile, target `model`), pushed before the rollout.")
    return {
        "spec": {"template": {
            "metadata": {"annotations": {VERSION_ANNOTATION: version_label(record)}},
            "spec": {"initContainers": [{
                "name": INIT_CONTAINER,
                "image": model_image,
                "env": [{"name": "MODEL_SHA256", "value": str(record["sha256"])}],
            }]},
        }},
    }


def torchserve_pvc_patch(record: dict[str, Any]) -> dict[str, Any]:
    """Strategic-merge patch of the Deployment (pvc overlay): the model-store mount's subPath and the annotation.

    volumeMounts merge by mountPath, so the mount keeps its volume and readOnly."""
    return {
        "spec": {"template": {
            "metadata": {"annotations": {VERSION_ANNOTATION: version_label(record)}},
            "spec": {"containers": [{
                "name": SERVING_CONTAINER,
                "volumeMounts": [{"mountPath": MODEL_STORE_MOUNT, "subPath": _checked_version(record)}],
            }]},
        }},
    }


def kserve_storage_uri(record: dict[str, Any], pvc: str = MODEL_STORE_PVC) -> str:
    return f"pvc://{pvc}/{KSERVE_PREFIX}/{_checked_version(record)}"


def kserve_patch(record: dict[str, Any], pvc: str = MODEL_STORE_PVC) -> dict[str, Any]:
    """JSON merge patch of the InferenceService (a custom resource: no strategic merge): storageUri + annotation."""
    return {
        "metadata": {"annotations": {VERSION_ANNOTATION: version_label(record)}},
        "spec": {"predictor": {"pytorch": {"storageUri": kserve_storage_uri(record, pvc)}}},
    }


def kserve_config_properties(template: str, version: str) -> str:
    """The KServe config.properties with its model_snapshot's version key set to the archive's version."""
    snapshot = re.search(r"^model_snapshot=(.*)$", template, re.MULTILINE)
    if snapshot is None:
        raise HjcagError("the KServe config.properties has no model_snapshot line.")
    doc = json.loads(snapshot.group(1))
    models = doc["models"]
    for name, versions in models.items():
        (settings,) = versions.values()
        models[name] = {version: settings}
    line = "model_snapshot=" + json.dumps(doc, separators=(",", ":"))
    return template[: snapshot.start()] + line + template[snapshot.end():]


@dataclass(frozen=True)
class Rollout:
    """One patch of one object, plus the files to put on the model-store volume first."""

    target: str
    kind: str  # Deployment | InferenceService
    name: str
    namespace: str
    patch: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # path relative to the model-store root -> source path
    texts: dict[str, str] = field(default_factory=dict)  # path relative to the model-store root -> content

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_rollout(target: str, mar: str | Path, record: dict[str, Any], model_image: str = "",
                 namespace: str = NAMESPACE, kserve_config: str | None = None) -> Rollout:
    """What rolling `mar` (with its hjcag.mar.json `record`) out to `target` changes."""
    mar = str(mar)
    if target == "torchserve":
        return Rollout(target, "Deployment", DEPLOYMENT, namespace, torchserve_image_patch(record, model_image))
    if target == "torchserve-pvc":
        version = _checked_version(record)
        return Rollout(target, "Deployment", DEPLOYMENT, namespace, torchserve_pvc_patch(record),
                       files={f"{version}/{ARCHIVE}": mar})
    if target == "kserve":
        version = _checked_version(record)
        if kserve_config is None:
            from hjcag.pipeline.io import REPO_ROOT

            kserve_config = (REPO_ROOT / KSERVE_CONFIG).read_text(encoding="utf-8")
        root = f"{KSERVE_PREFIX}/{version}"
        return Rollout(target, "InferenceService", INFERENCE_SERVICE, namespace, kserve_patch(record),
                       files={f"{root}/model-store/{ARCHIVE}": mar},
                       texts={f"{root}/config/config.properties": kserve_config_properties(kserve_config, version)})
    raise ConfigError(f"unknown deploy target '{target}'. Choose one of {list(TARGETS)}.")


def write_model_store(rollout: Rollout, model_store: str | Path) -> list[str]:
    """Put the rollout's files on the mounted model-store volume (written aside, then renamed into place)."""
    root = Path(model_store)
    if (rollout.files or rollout.texts) and not root.is_dir():
        raise HjcagError(f"model store '{root}' is not mounted in this step; the {rollout.target} target writes the "
                         f"archive there (the pipeline mounts the {MODEL_STORE_PVC} PVC).")
    written = []
    for rel, source in rollout.files.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(source, tmp)
        tmp.replace(dst)
        written.append(str(dst))
    for rel, text in rollout.texts.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        written.append(str(dst))
    return written


def apply_rollout(rollout: Rollout) -> dict[str, Any]:
    """Patch the object through the Kubernetes API (in-cluster service account, else ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    if rollout.kind == "Deployment":
        result = client.AppsV1Api().patch_namespaced_deployment(rollout.name, rollout.namespace, rollout.patch)
        return {"kind": rollout.kind, "name": result.metadata.name, "generation": result.metadata.generation}
    result = client.CustomObjectsApi().patch_namespaced_custom_object(
        KSERVE_GROUP, KSERVE_VERSION, rollout.namespace, KSERVE_PLURAL, rollout.name, rollout.patch)
    meta = result["metadata"]
    return {"kind": rollout.kind, "name": meta["name"], "generation": meta.get("generation")}


def deploy(target: str, mar_dir: str | Path, model_image: str = "", namespace: str = NAMESPACE,
           model_store: str | Path = "/model-store", dry_run: bool = False) -> dict[str, Any]:
    """The deploy step: plan the rollout of ``mar_dir/hjcag.mar``; unless `dry_run`, write the model store and patch.

    Returns a record of what was (or, with `dry_run`, would have been) done."""
    mar = Path(mar_dir) / ARCHIVE
    record_path = Path(f"{mar}.json")
    if not record_path.exists():
        raise HjcagError(f"'{record_path}' not found; the deploy step needs the archive record `hjcag package` writes.")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    rollout = plan_rollout(target, mar, record, model_image, namespace)
    done: dict[str, Any] = {"dry_run": dry_run, "version": record["version"], "sha256": record["sha256"],
                            **rollout.to_dict()}
    done.pop("texts")
    if not dry_run:
        done["written"] = write_model_store(rollout, model_store)
        done["applied"] = apply_rollout(rollout)
    return done
