"""The KFP training pipeline: raw data -> prepare -> validate -> features -> the folds in parallel -> evaluate ->
gate -> (only when the gate passes) register -> package -> deploy.

Cluster settings (ignored by ``kfp.local``, which warns about the accelerator and never sees the kfp-kubernetes
platform spec): features and training request one ``nvidia.com/gpu`` and land on GPU nodes; the data PVC
``hjcag-data`` is mounted at ``/data`` on the data steps; register and package read the MLflow location from the
``hjcag-mlflow`` secret; deploy writes to the ``hjcag-model-store`` PVC and patches through the Kubernetes API.
"""

from kfp import dsl, kubernetes

from hjcag.pipeline import components as c
from hjcag.pipeline.deploy import MODEL_STORE_PVC

PIPELINE_NAME = "hjcag-training"
DATA_PVC, DATA_MOUNT = "hjcag-data", "/data"
MODEL_STORE_MOUNT = "/model-store"  # where deploy sees the MODEL_STORE_PVC that serving reads
MLFLOW_SECRET = "hjcag-mlflow"  # key tracking_uri (required)
MLFLOW_AUTH_SECRET = "hjcag-mlflow-auth"  # optional: credentials of the tracking server and its artifact store
MLFLOW_AUTH_ENV = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "s3_endpoint_url": "MLFLOW_S3_ENDPOINT_URL",
}
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # as in k8s/overlays/prod


def _on_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_request("2").set_memory_request("8G")
    kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    return task


def _with_data(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)


def _with_mlflow(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {"tracking_uri": "MLFLOW_TRACKING_URI"})
    kubernetes.use_secret_as_env(task, MLFLOW_AUTH_SECRET, MLFLOW_AUTH_ENV, optional=True)
    return task


def features_tasks(p: dict, source_dir: str, dataset_kind: str, demo_size: str, modalities: str, standin: bool,
                   feature_cache: str) -> dsl.PipelineTask:
    """raw data -> prepare -> validate -> features: how the training and the tuning pipeline both begin."""
    raw = _with_data(c.raw_data(source_dir=source_dir, demo_size=demo_size, **p))
    manifest = _with_data(c.prepare(raw=raw.outputs["raw"], dataset_kind=dataset_kind, modalities=modalities, **p))
    validated = _with_data(c.validate(raw=raw.outputs["raw"], manifest=manifest.outputs["manifest"],
                                      modalities=modalities, **p))
    return _on_gpu(_with_data(c.features(raw=raw.outputs["raw"], validated=validated.outputs["validated"],
                                         modalities=modalities, standin=standin, cache_dir=feature_cache, **p)))


@dsl.pipeline(name=PIPELINE_NAME, description="HJCAG training: validate, extract features, train the folds in "
              "parallel, evaluate, gate, register, package and deploy.")
def training_pipeline(
    params_yaml: str = "",
    profile: str = "",
    source_dir: str = "",
    dataset_kind: str = "meld",
    demo_size: str = "tiny",
    modalities: str = "t,a,v",
    standin_features: bool = False,
    feature_cache: str = "",
    experiment: str = "",
    registered_name: str = "",
    deploy_target: str = "torchserve-pvc",
    model_image: str = "",
    namespace: str = "hjcag",
    deploy_dry_run: bool = False,
) -> None:
    """params_yaml: the text of a params.yaml (empty: the one in the image); profile: its profile (empty: the
    file's). source_dir: the dataset on the data PVC, e.g. /data/MELD.Raw (empty: generate the demo dataset).
    deploy_target: torchserve (init-container image; needs model_image) | torchserve-pvc | kserve."""
    p = {"params_yaml": params_yaml, "profile": profile}
    feats = features_tasks(p, source_dir, dataset_kind, demo_size, modalities, standin_features, feature_cache)
    folds = c.plan_folds(features=feats.outputs["features"], **p)
    with dsl.ParallelFor(folds.output, name="folds") as fold:
        trained = _on_gpu(c.train_fold(features=feats.outputs["features"], fold=fold, modalities=modalities, **p))
    evaluated = c.evaluate(folds=dsl.Collected(trained.outputs["model"]), features=feats.outputs["features"],
                           modalities=modalities, **p)
    gated = c.gate(run=evaluated.outputs["run"], **p)
    with dsl.If(gated.outputs["Output"] == True, name="gates-passed"):  # noqa: E712 (a pipeline condition)
        registered = _with_mlflow(c.register(run=evaluated.outputs["run"], features=feats.outputs["features"],
                                             experiment=experiment, registered_name=registered_name, **p))
        registered.set_caching_options(False)
        packaged = _with_mlflow(c.package(model_uri=registered.outputs["model_uri"],
                                          features=feats.outputs["features"], **p))
        rollout = {"mar": packaged.outputs["mar"], "target": deploy_target, "namespace": namespace,
                   "model_image": model_image, "dry_run": deploy_dry_run}
        # torchserve-pvc and kserve put the archive on the model-store volume; torchserve ships it in an image
        # (the init-container target), whose overlays create no such volume, so that rollout mounts none.
        with dsl.If(deploy_target != "torchserve", name="volume-rollout"):
            to_volume = c.deploy(**rollout).set_caching_options(False)
            kubernetes.mount_pvc(to_volume, pvc_name=MODEL_STORE_PVC, mount_path=MODEL_STORE_MOUNT)
        with dsl.Else(name="image-rollout"):
            c.deploy(**rollout).set_caching_options(False)
