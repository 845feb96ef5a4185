"""The Kubeflow Pipelines (KFP v2) training pipeline of hjcag.

* :mod:`hjcag.pipeline.steps`: what each pipeline stage does, as plain functions over paths (no KFP).
* :mod:`hjcag.pipeline.deploy`: the rollout patches for the TorchServe Deployment / KServe InferenceService.
* :mod:`hjcag.pipeline.components`: the KFP components, thin typed wrappers over ``steps``.
* :mod:`hjcag.pipeline.training`: the pipeline itself; :mod:`hjcag.pipeline.compile` writes its YAML.
"""
