"""The Kubeflow Pipelines (KFP v2) training pipeline of hjcag.

* :mod:`hjcag.pipeline.components`: the KFP components, a few typed lines each over :mod:`hjcag.stages`.
* :mod:`hjcag.pipeline.io`: params as text and the raw-dataset artifact (what only KFP needs).
* :mod:`hjcag.pipeline.deploy`: the rollout patches for the TorchServe Deployment / KServe InferenceService.
* :mod:`hjcag.pipeline.training`: the pipeline itself; :mod:`hjcag.pipeline.compile` writes its YAML.
"""
