"""The pipeline's deploy step without a cluster: the patch bodies for the TorchServe Deployment (init-container
image and PVC variants) and the KServe InferenceService, checked against the shipped manifests they patch, the
files a rollout puts on the model-store volume, and the KFP plumbing that needs no training."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hjcag import artifacts, stages
from hjcag.errors import ConfigError, HjcagError
from hjcag.pipeline import deploy, io

REPO = Path(__file__).resolve().parents[1]
RECORD = {"version": "7", "sha256": "ab" * 32, "model": "hjcag-meld", "archive": "hjcag.mar"}


def manifest(path: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / path).read_text())


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (item,) = [i for i in items if i["name"] == name]
    return item


def test_torchserve_image_patch_sets_the_init_container_image_sha_and_annotation() -> None:
    patch = deploy.torchserve_image_patch(RECORD, "registry.example.com/hjcag/hjcag-model:7")
    template = patch["spec"]["template"]
    assert template["metadata"]["annotations"] == {"hjcag.io/model-version": "hjcag-meld/7"}
    (init,) = template["spec"]["initContainers"]
    assert init == {"name": "fetch-model", "image": "registry.example.com/hjcag/hjcag-model:7",
                    "env": [{"name": "MODEL_SHA256", "value": RECORD["sha256"]}]}
    # Strategic merge matches by these names: they must exist in the base Deployment.
    base = manifest("k8s/base/deployment.yaml")["spec"]["template"]
    assert "hjcag.io/model-version" in base["metadata"]["annotations"]
    fetch = by_name(base["spec"]["initContainers"], "fetch-model")
    assert by_name(fetch["env"], "MODEL_SHA256")
    with pytest.raises(ConfigError, match="model_image"):
        deploy.torchserve_image_patch(RECORD, "")


def test_torchserve_pvc_patch_points_the_model_store_mount_at_the_version_directory() -> None:
    patch = deploy.torchserve_pvc_patch(RECORD)
    template = patch["spec"]["template"]
    assert template["metadata"]["annotations"]["hjcag.io/model-version"] == "hjcag-meld/7"
    (container,) = template["spec"]["containers"]
    assert container == {"name": "torchserve",
                         "volumeMounts": [{"mountPath": "/home/model-server/model-store", "subPath": "7"}]}
    # volumeMounts merge by mountPath: the pvc overlay mounts the store there, with a subPath to replace.
    overlay = manifest("k8s/overlays/pvc/deployment-patch.yaml")["spec"]["template"]["spec"]
    mount = by_name(overlay["containers"], "torchserve")["volumeMounts"][0]
    assert mount["mountPath"] == deploy.MODEL_STORE_MOUNT and "subPath" in mount
    assert overlay["volumes"][0]["persistentVolumeClaim"]["claimName"] == deploy.MODEL_STORE_PVC


def test_kserve_patch_sets_the_storage_uri_and_annotation() -> None:
    patch = deploy.kserve_patch(RECORD)
    assert patch == {
        "metadata": {"annotations": {"hjcag.io/model-version": "hjcag-meld/7"}},
        "spec": {"predictor": {"pytorch": {"storageUri": "pvc://hjcag-model-store/kserve/7"}}},
    }
    isvc = manifest("k8s/overlays/kserve/inferenceservice.yaml")
    assert isvc["metadata"]["name"] == deploy.INFERENCE_SERVICE
    assert "hjcag.io/model-version" in isvc["metadata"]["annotations"]
    assert isvc["spec"]["predictor"]["pytorch"]["storageUri"].startswith("pvc://hjcag-model-store/kserve/")


def test_the_rbac_role_allows_exactly_the_objects_the_deploy_step_patches() -> None:
    rules = manifest("k8s/components/pipeline-rbac/role.yaml")["rules"]
    allowed = {(r["apiGroups"][0], r["resources"][0], r["resourceNames"][0]) for r in rules}
    assert allowed == {("apps", "deployments", deploy.DEPLOYMENT),
                       (deploy.KSERVE_GROUP, deploy.KSERVE_PLURAL, deploy.INFERENCE_SERVICE)}
    assert all("patch" in r["verbs"] for r in rules)


def test_kserve_config_gets_the_archive_version_in_its_model_snapshot() -> None:
    template = (REPO / deploy.KSERVE_CONFIG).read_text()
    rendered = deploy.kserve_config_properties(template, "7")

    def snapshot(text: str) -> dict[str, Any]:
        (line,) = [ln for ln in text.splitlines() if ln.startswith("model_snapshot=")]
        return json.loads(line.removeprefix("model_snapshot="))

    before, after = snapshot(template), snapshot(rendered)
    assert list(after["models"]["hjcag"]) == ["7"]
    assert after["models"]["hjcag"]["7"] == next(iter(before["models"]["hjcag"].values()))
    others = [ln for ln in rendered.splitlines() if not ln.startswith("model_snapshot=")]
    assert others == [ln for ln in template.splitlines() if not ln.startswith("model_snapshot=")]


def test_plan_rollout_lists_the_files_for_the_model_store(tmp_path: Path) -> None:
    mar = tmp_path / "hjcag.mar"
    pvc = deploy.plan_rollout("torchserve-pvc", mar, RECORD)
    assert (pvc.kind, pvc.name, pvc.namespace) == ("Deployment", "hjcag-torchserve", "hjcag")
    assert pvc.files == {"7/hjcag.mar": str(mar)}
    kserve = deploy.plan_rollout("kserve", mar, RECORD, namespace="serving")
    assert (kserve.kind, kserve.name, kserve.namespace) == ("InferenceService", "hjcag", "serving")
    assert kserve.files == {"kserve/7/model-store/hjcag.mar": str(mar)}
    assert list(kserve.texts) == ["kserve/7/config/config.properties"]
    image = deploy.plan_rollout("torchserve", mar, RECORD, model_image="m:7")
    assert image.files == {} and image.texts == {}
    with pytest.raises(ConfigError, match="unknown deploy target"):
        deploy.plan_rollout("helm", mar, RECORD)
    with pytest.raises(ConfigError, match="cannot name a directory"):
        deploy.plan_rollout("kserve", mar, {**RECORD, "version": "../x"})


def test_deploy_dry_run_and_the_model_store_files(tmp_path: Path) -> None:
    mar_dir = tmp_path / "mar"
    mar_dir.mkdir()
    (mar_dir / "hjcag.mar").write_bytes(b"archive")
    (mar_dir / "hjcag.mar.json").write_text(json.dumps(RECORD))
    store = tmp_path / "store"
    done = deploy.deploy("kserve", mar_dir, model_store=store, dry_run=True)
    assert done["dry_run"] is True and done["patch"] == deploy.kserve_patch(RECORD)
    assert not store.exists()  # a dry run writes nothing and calls no API

    rollout = deploy.plan_rollout("kserve", mar_dir / "hjcag.mar", RECORD)
    with pytest.raises(HjcagError, match="not mounted"):
        deploy.write_model_store(rollout, store)
    store.mkdir()
    written = deploy.write_model_store(rollout, store)
    assert (store / "kserve/7/model-store/hjcag.mar").read_bytes() == b"archive"
    assert '"7":{' in (store / "kserve/7/config/config.properties").read_text()
    assert len(written) == 2 and not list(store.rglob("*.part"))


# ---------------------------------------------------------------- KFP plumbing that needs no training


def test_params_come_from_text_or_from_the_shipped_file(tmp_path: Path) -> None:
    shipped, path = io.write_params("", "demo", tmp_path / "a")
    assert path.read_text() == (REPO / "params.yaml").read_text()
    assert shipped.profile == "demo" and io.resolve_params("", "demo") == shipped
    text = yaml.safe_dump({"seed": 3, "train": {"folds": 4}, "gates": {"min_accuracy": 0.9}})
    given, path = io.write_params(text, "", tmp_path / "b")
    assert (given.seed, given.train.folds, given.gates.min_accuracy) == (3, 4, 0.9)
    assert path.read_text() == text and io.resolve_params(text, "") == given


def test_resolving_params_text_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every component resolves its params; none may leave a folder in the pod's (or a local run's) temp dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    io.resolve_params("", "demo")
    io.resolve_params(yaml.safe_dump({"seed": 3}), "")
    assert list(tmp_path.iterdir()) == []


def test_fold_runs_merge_into_one_run_directory_only_when_they_belong_together(tmp_path: Path) -> None:
    def fold_run(name: str, k: int, identity: str = "same") -> Path:
        d = tmp_path / name
        (d / f"fold_{k}").mkdir(parents=True)
        (d / f"fold_{k}" / "result.json").write_text("{}")
        for top in artifacts.RUN_TOP_FILES:
            (d / top).write_text(json.dumps({"identity": identity}))
        return d

    merged = stages.merge_folds([fold_run("a", 0), fold_run("b", 1)], tmp_path / "run")
    assert sorted(p.name for p in merged.iterdir()) == ["fold_0", "fold_1", "folds.json", "model_config.json",
                                                         "run.json"]
    with pytest.raises(HjcagError, match="other settings"):
        stages.merge_folds([fold_run("c", 0), fold_run("d", 1, identity="other")], tmp_path / "run2")


def test_the_demo_raw_dataset_carries_the_params_context_cue(tmp_path: Path) -> None:
    """The KFP raw_data step writes the demo data with params.yaml's demo_data.context_cue (issue 10's echo turns)."""
    import pandas as pd

    from hjcag.data.synthetic import CUES_FILE, plan_dataset

    meta = io.raw_dataset(tmp_path / "artifact", "", "tiny", 13, 0.4)
    assert meta["context_cue"] == "0.4"
    written = pd.read_csv(tmp_path / "artifact" / CUES_FILE)
    cued, plain = plan_dataset("tiny", 13, context_cue=0.4), plan_dataset("tiny", 13)
    assert list(written["Emotion"]) == [u.emotion for u in cued] != [u.emotion for u in plain]


def test_a_raw_dataset_on_a_volume_is_a_pointer(tmp_path: Path) -> None:
    source = tmp_path / "MELD.Raw"
    source.mkdir()
    meta = io.raw_dataset(tmp_path / "artifact", str(source))
    assert io.raw_root(tmp_path / "artifact", meta) == source
    assert io.raw_root(tmp_path / "artifact", {}) == tmp_path / "artifact"
    with pytest.raises(HjcagError, match="not found"):
        io.raw_dataset(tmp_path / "artifact2", str(tmp_path / "missing"))
