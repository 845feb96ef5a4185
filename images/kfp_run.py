"""Run tasks of the compiled KFP pipeline inside the component image, exactly as a KFP launcher would.

    python images/kfp_run.py --image IMAGE --work DIR --until gate [--arg NAME=VALUE ...]

Everything comes from the compiled pipeline (pipelines/hjcag_training.yaml), never from the Python sources: the
DAG (which task feeds which, ParallelFor, Collected, dsl.If), each component's container command and args, its
input and output definitions. For every task, in dependency order until --until, this script

* builds the ExecutorInput JSON: parameter values, input artifacts (the upstream outputs, with the metadata their
  executor reported), output artifacts with URIs under s3://hjcag-image-test/ and the executor output file;
* runs the component's command + args (with ``{{$}}`` replaced by that JSON) in the image via images/in_image.sh,
  with the work directory mounted at /s3/hjcag-image-test, the local path KFP's executor maps those URIs to;
* checks the outputs are where KFP expects them (every output artifact's path exists, the executor output file
  was written) and reads their metadata and output parameters for the downstream tasks.

Pipeline parameters: the compiled defaults, overridden with --arg (values are JSON when they parse, else text).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "hjcag-image-test"
URI_ROOT, MOUNT = f"s3://{BUCKET}", f"/s3/{BUCKET}"  # kfp.dsl.types.artifact_types maps s3:// to /s3/
CONTAINER_UID = 1000  # the component image's user
# Artifacts that live in their metadata (log_metric & co.), which KFP records; the executor writes no file for them.
METADATA_ONLY = {"system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics"}


class Stop(Exception):
    """Raised after the --until task ran."""


class Runner:
    def __init__(self, spec: dict[str, Any], image: str, work: Path, until: str) -> None:
        self.components, self.executors = spec["components"], spec["deploymentSpec"]["executors"]
        self.image, self.work, self.until = image, work, until
        self.timings: list[tuple[str, float]] = []

    # ---- the DAG
    def run_dag(self, dag: dict[str, Any], params: dict[str, Any], artifacts: dict[str, list], prefix: str
                ) -> dict[str, dict[str, Any]]:
        tasks = dag["tasks"]
        order = TopologicalSorter({name: t.get("dependentTasks", []) for name, t in sorted(tasks.items())})
        outputs: dict[str, dict[str, Any]] = {}
        for name in order.static_order():
            task = tasks[name]
            ins = task.get("inputs", {})
            p = {k: self.parameter(v, params, outputs) for k, v in ins.get("parameters", {}).items()}
            a = {k: self.artifact(v, artifacts, outputs) for k, v in ins.get("artifacts", {}).items()}
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition and not self.holds(condition, p):
                print(f"--- {prefix}{name}: skipped ({condition} is false)", flush=True)
                continue
            component = self.components[task["componentRef"]["name"]]
            if "dag" not in component:
                outputs[name] = self.run_task(f"{prefix}{name}", component, p, a)
                if name == self.until:
                    raise Stop
            elif "parameterIterator" in task:
                it = task["parameterIterator"]
                runs = [self.run_dag(component["dag"], {**p, it["itemInput"]: item}, a, f"{prefix}{name}-{i}/")
                        for i, item in enumerate(p[it["items"]["inputParameter"]])]
                outputs[name] = self.collect(component["dag"], runs)
            else:
                run = self.run_dag(component["dag"], p, a, f"{prefix}{name}/")
                outputs[name] = self.collect(component["dag"], [run])
        return outputs

    @staticmethod
    def parameter(source: dict[str, Any], params: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> Any:
        if "componentInputParameter" in source:
            return params[source["componentInputParameter"]]
        if "taskOutputParameter" in source:
            ref = source["taskOutputParameter"]
            return outputs[ref["producerTask"]]["parameters"][ref["outputParameterKey"]]
        if "runtimeValue" in source:
            return source["runtimeValue"]["constant"]
        raise SystemExit(f"unsupported parameter source in the compiled pipeline: {source}")

    @staticmethod
    def artifact(source: dict[str, Any], artifacts: dict[str, list], outputs: dict[str, dict[str, Any]]) -> list:
        if "componentInputArtifact" in source:
            return artifacts[source["componentInputArtifact"]]
        if "taskOutputArtifact" in source:
            ref = source["taskOutputArtifact"]
            return outputs[ref["producerTask"]]["artifacts"][ref["outputArtifactKey"]]
        raise SystemExit(f"unsupported artifact source in the compiled pipeline: {source}")

    @staticmethod
    def holds(condition: str, params: dict[str, Any]) -> bool:
        """The conditions KFP compiles dsl.If(channel == constant) to: inputs.parameter_values['X'] == constant."""
        left, _, right = condition.partition(" == ")
        name = left.removeprefix("inputs.parameter_values['").removesuffix("']")
        if not right or name == left or name not in params:
            raise SystemExit(f"unsupported condition in the compiled pipeline: {condition}")
        return params[name] == json.loads(right)

    @staticmethod
    def collect(dag: dict[str, Any], runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """A sub-DAG's outputs (dsl.Collected over a ParallelFor: every iteration's artifacts, in order)."""
        arts: dict[str, list] = {}
        for key, out in dag.get("outputs", {}).get("artifacts", {}).items():
            for run in runs:
                for sel in out["artifactSelectors"]:
                    arts.setdefault(key, []).extend(run[sel["producerSubtask"]]["artifacts"][sel["outputArtifactKey"]])
        return {"parameters": {}, "artifacts": arts}

    # ---- one container
    def run_task(self, name: str, component: dict[str, Any], params: dict[str, Any], artifacts: dict[str, list]
                 ) -> dict[str, Any]:
        container = self.executors[component["executorLabel"]]["container"]
        task_dir = self.work / name
        task_dir.mkdir(parents=True, exist_ok=True)
        try:  # the image's user writes the outputs here
            os.chown(task_dir, CONTAINER_UID, CONTAINER_UID)
        except PermissionError:
            task_dir.chmod(0o777)
        outs = component.get("outputDefinitions", {})
        in_image = f"{MOUNT}/{name}"
        executor_input = {
            "inputs": {
                "parameterValues": {k: params[k] for k in component.get("inputDefinitions", {}).get("parameters", {})
                                    if k in params},
                "artifacts": {k: {"artifacts": v} for k, v in artifacts.items()},
            },
            "outputs": {
                "parameters": {k: {"outputFile": f"{in_image}/outputs/{k}"} for k in outs.get("parameters", {})},
                "artifacts": {k: {"artifacts": [{"name": k, "type": spec["artifactType"],
                                                 "uri": f"{URI_ROOT}/{name}/{k}", "metadata": {}}]}
                              for k, spec in outs.get("artifacts", {}).items()},
                "outputFile": f"{in_image}/executor_output.json",
            },
        }
        (task_dir / "executor_input.json").write_text(json.dumps(executor_input, indent=2), encoding="utf-8")
        argv = container["command"] + [a.replace("{{$}}", json.dumps(executor_input)) for a in container["args"]]
        if any("{{$" in a for a in argv):
            raise SystemExit(f"{name}: a placeholder this runner does not fill: {argv}")
        print(f"--- {name}: {' '.join(container['command'][:2])} ... {' '.join(container['args'][2:])}", flush=True)
        start = time.monotonic()
        done = subprocess.run([str(ROOT / "images/in_image.sh"), self.image, "-v", f"{self.work}:{MOUNT}", "--",
                               *argv], check=False)
        self.timings.append((name, time.monotonic() - start))
        if done.returncode != 0:
            raise SystemExit(f"{name}: the component failed in {self.image} (exit {done.returncode})")
        return self.read_outputs(name, task_dir, executor_input["outputs"])

    def read_outputs(self, name: str, task_dir: Path, outputs: dict[str, Any]) -> dict[str, Any]:
        result_file = task_dir / "executor_output.json"
        if not result_file.is_file():
            raise SystemExit(f"{name}: no executor output at {result_file}")
        result = json.loads(result_file.read_text(encoding="utf-8"))
        params = dict(result.get("parameterValues", {}))
        for key in outputs["parameters"]:
            if key not in params:
                raise SystemExit(f"{name}: output parameter {key!r} missing from {result_file}")
        arts = {}
        for key, listed in outputs["artifacts"].items():
            reported = result.get("artifacts", {}).get(key, listed)["artifacts"]
            for art in reported:
                art.setdefault("type", listed["artifacts"][0]["type"])
                local = self.work / art["uri"].removeprefix(f"{URI_ROOT}/")
                if art["type"]["schemaTitle"] in METADATA_ONLY:
                    if not art.get("metadata"):
                        raise SystemExit(f"{name}: output {key!r} ({art['type']['schemaTitle']}) has no metadata")
                elif not local.exists():
                    raise SystemExit(f"{name}: output artifact {key!r} not written to {art['uri']} ({local})")
            arts[key] = reported
        summary = params | {k: [a.get("metadata", {}) for a in v] for k, v in arts.items()}
        print(f"    {name}: {json.dumps(summary)[:400]}", flush=True)
        return {"parameters": params, "artifacts": arts}


def parse_arg(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines/hjcag_training.yaml")
    parser.add_argument("--image", required=True, help="the component image to run the tasks in")
    parser.add_argument("--work", type=Path, required=True, help="host directory for the artifacts (emptied)")
    parser.add_argument("--until", required=True, help="stop after this task (a DAG task name, e.g. gate)")
    parser.add_argument("--arg", type=parse_arg, action="append", default=[], help="pipeline parameter NAME=VALUE")
    args = parser.parse_args()

    # The first document is the pipeline spec; a second one, when present, the platform (Kubernetes) spec.
    spec = next(yaml.safe_load_all(args.pipeline.read_text(encoding="utf-8")))
    root = spec["root"]
    params = {k: v.get("defaultValue") for k, v in root.get("inputDefinitions", {}).get("parameters", {}).items()}
    unknown = {k for k, _ in args.arg} - params.keys()
    if unknown:
        raise SystemExit(f"not parameters of {args.pipeline}: {sorted(unknown)}")
    params.update(dict(args.arg))
    args.work.mkdir(parents=True, exist_ok=True)
    if any(args.work.iterdir()):
        raise SystemExit(f"{args.work} is not empty")
    runner = Runner(spec, args.image, args.work.resolve(), args.until)
    try:
        runner.run_dag(root["dag"], params, {}, "")
    except Stop:
        pass
    else:
        raise SystemExit(f"no task named {args.until!r} ran")
    for name, seconds in runner.timings:
        print(f"    {seconds:6.1f} s  {name}")
    print(f"ran {len(runner.timings)} components in {args.image} as KFP runs them, up to {args.until}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
