"""The training loop and a whole run: learning, early stopping, StepLR, determinism, checkpoint-resume, outputs."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hjcag.artifacts import load_trained_model
from hjcag.data.features_file import FeatureSet
from hjcag.device import resolve_device, torch_threads
from hjcag.errors import ConfigError, HjcagError
from hjcag.model.factory import build_model
from hjcag.params import Params, params_from_dict
from hjcag.train.loop import TensorData, class_weights, drop_modalities, predict, train_fold
from hjcag.train.run import train_and_evaluate

LABELS = ("ang", "hap", "sad")


DIMS = {"t": 6, "a": 5, "v": 4}
SEQ_LEN = 4
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)


def synthetic(n_groups: int = 24, per_group: int = 5, noise: float = 1.5, seed: int = 0) -> FeatureSet:
    """Class-dependent means per modality plus Gaussian noise; groups are dialogues of `per_group` rows."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    y = rng.integers(0, len(LABELS), size=n)
    features = {}
    for m, d in DIMS.items():
        means = rng.normal(size=(len(LABELS), d))
        features[m] = (means[y][:, None, :] + noise * rng.normal(size=(n, SEQ_LEN, d))).astype(np.float32)
    return FeatureSet(
        utterance_id=np.array([f"u{i:03d}" for i in range(n)]),
        label=np.array(LABELS)[y],
        group=np.array([f"dia{i // per_group}" for i in range(n)]),
        features=features,
        label_names=LABELS,
    )


def tiny_params(seed: int = 7, **train: Any) -> Params:
    base = {"epochs": 6, "batch_size": 16, "lr": 1e-2, "patience": 3, "folds": 3, "step_size": 2, "gamma": 0.5,
            "device": "cpu"}
    return params_from_dict({
        "seed": seed,
        "model": {"seq_len": SEQ_LEN, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8},
        "train": {**base, **train},
    })


def fold_data(fs: FeatureSet, n_val: int = 20) -> tuple[TensorData, TensorData]:
    return TensorData.from_features(fs.subset(np.arange(n_val, len(fs)))), \
        TensorData.from_features(fs.subset(np.arange(n_val)))


def new_model(params: Params, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("hjcag", DIMS, len(LABELS), params.model)


def test_loss_decreases_and_the_model_learns_an_easy_problem() -> None:
    fs = synthetic(noise=0.5)
    params = tiny_params(epochs=15, patience=15, step_size=10)
    train, val = fold_data(fs)
    result = train_fold(new_model(params), train, val, params.train, seed=0, device=CPU, quiet=True)
    losses = [h["train_loss"] for h in result.history]
    assert result.epochs_run == 15
    assert losses[-1] < 0.3 * losses[0]
    assert result.best_val_loss < result.history[0]["val_loss"]
    assert max(h["val_acc"] for h in result.history) >= 0.9
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "val_acc", "val_weighted_f1", "lr"}


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    # lr = 0: the weights never change, so the validation loss (eval mode, no dropout) never improves after epoch 1.
    params = tiny_params(epochs=50, patience=4, lr=0.0)
    train, val = fold_data(synthetic())
    result = train_fold(new_model(params), train, val, params.train, seed=0, device=CPU, quiet=True)
    assert result.best_epoch == 1
    assert result.epochs_run == 1 + 4
    assert result.stopped_early
    assert len({h["val_loss"] for h in result.history}) == 1


def test_learning_rate_follows_steplr_and_callback_sees_every_epoch() -> None:
    params = tiny_params(epochs=5, patience=10, lr=1e-2, step_size=2, gamma=0.5)
    train, val = fold_data(synthetic())
    calls: list[tuple[int, int, dict[str, float]]] = []
    result = train_fold(new_model(params), train, val, params.train, seed=0, device=CPU, fold_index=3,
                        on_epoch=lambda f, e, m: calls.append((f, e, m)), quiet=True)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])
    assert [(f, e) for f, e, _ in calls] == [(3, 1), (3, 2), (3, 3), (3, 4), (3, 5)]
    assert [m["val_loss"] for _, _, m in calls] == [h["val_loss"] for h in result.history]


def test_diverging_training_is_a_clear_error() -> None:
    fs = synthetic()
    fs.features["t"][:] = np.nan
    params = tiny_params()
    train, val = fold_data(fs)
    with pytest.raises(HjcagError, match="diverged"):
        train_fold(new_model(params), train, val, params.train, seed=0, device=CPU, quiet=True)


def read_run(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text())
    folds = sorted(out.glob("fold_*"))
    return {
        "metrics": {k: v for k, v in metrics.items() if k != "fingerprint"},
        "histories": [json.loads((f / "history.json").read_text()) for f in folds],
        "weights": [(f / "model.safetensors").read_bytes() for f in folds],
    }


def test_same_seed_gives_the_same_numbers_bit_for_bit(tmp_path: Path) -> None:
    fs = synthetic()
    for name in ("a", "b"):
        train_and_evaluate(fs, tiny_params(seed=7), ("t", "a", "v"), "hjcag", tmp_path / name, quiet=True)
    train_and_evaluate(fs, tiny_params(seed=8), ("t", "a", "v"), "hjcag", tmp_path / "c", quiet=True)
    a, b, c = (read_run(tmp_path / name) for name in "abc")
    assert a == b
    assert a["histories"] != c["histories"]


class Interrupt(KeyboardInterrupt):
    pass


def test_an_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    fs = synthetic()
    params = tiny_params(epochs=6, patience=6)
    train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", tmp_path / "reference", quiet=True)

    out = tmp_path / "interrupted"

    def stop_in_fold_1(unit: str, epoch: int, metrics: dict[str, float]) -> None:
        if (unit, epoch) == ("fold_1", 3):
            raise Interrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", out, on_epoch=stop_in_fold_1, quiet=True)
    assert (out / "fold_0" / "result.json").exists()
    assert (out / "fold_1" / "checkpoint.pt").exists()
    assert not (out / "fold_1" / "result.json").exists()
    assert not (out / "metrics.json").exists()
    fold0_mtime = (out / "fold_0" / "result.json").stat().st_mtime_ns

    calls: list[tuple[str, int]] = []
    train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", out, on_epoch=lambda f, e, m: calls.append((f, e)),
                       quiet=True)
    assert calls[0] == ("fold_1", 4)  # fold 0 skipped, fold 1 continued after epoch 3
    assert ("fold_1", 1) not in calls and all(f != "fold_0" for f, _ in calls)
    assert (out / "fold_0" / "result.json").stat().st_mtime_ns == fold0_mtime
    assert not (out / "fold_1" / "checkpoint.pt").exists()  # removed once the fold is done
    assert read_run(out) == read_run(tmp_path / "reference")

    # A complete run is not retrained.
    calls.clear()
    again = train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", out, on_epoch=lambda f, e, m: calls.append(
        (f, e)), quiet=True)
    assert calls == []
    assert again == json.loads((out / "metrics.json").read_text())


def test_changed_settings_refuse_to_resume(tmp_path: Path) -> None:
    fs = synthetic()
    out = tmp_path / "run"
    train_and_evaluate(fs, tiny_params(epochs=2), ("t", "a"), "hjcag", out, quiet=True)
    with pytest.raises(HjcagError, match=r"changed: train.*new --out"):
        train_and_evaluate(fs, tiny_params(epochs=3), ("t", "a"), "hjcag", out, quiet=True)
    with pytest.raises(HjcagError, match=r"changed: .*modalities"):
        train_and_evaluate(fs, tiny_params(epochs=2), ("t", "a", "v"), "hjcag", out, quiet=True)
    # Runtime-only settings (device, threads) may change between sessions.
    train_and_evaluate(fs, tiny_params(epochs=2, device="auto", num_threads=1), ("t", "a"), "hjcag", out, quiet=True)


def test_run_directory_holds_metrics_report_and_a_rebuildable_model(tmp_path: Path) -> None:
    fs = synthetic()
    out = tmp_path / "run"
    metrics = train_and_evaluate(fs, tiny_params(), ("t", "v"), "hjcag", out, quiet=True)
    assert metrics["model"] == "hjcag" and metrics["modalities"] == ["t", "v"] and metrics["protocol"] == "cv5"
    assert metrics["labels"] == list(LABELS) and metrics["n_utterances"] == len(fs)
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert 0.0 <= metrics[key]["mean"] <= 1.0 and metrics[key]["std"] >= 0.0
    assert set(metrics["per_class_f1"]) == set(LABELS)
    assert len(metrics["folds"]) == 3
    assert sum(f["n_test"] for f in metrics["folds"]) == len(fs)
    for name in ("report.md", "confusion_matrix.png", "folds.png", "learning_curves.png", "model_config.json",
                 "folds.json", "run.json"):
        assert (out / name).exists(), name
    fold = metrics["folds"][1]
    assert set(fold) >= {"fold", "accuracy", "weighted_f1", "macro_f1", "per_class_f1", "confusion", "n_train",
                         "n_val", "n_test", "best_epoch", "epochs_run"}
    assert 1 <= fold["best_epoch"] <= fold["epochs_run"]

    # Rebuild fold 1's model from model_config.json + safetensors and reproduce its test accuracy.
    model, doc = load_trained_model(out, fold=1)
    assert doc["input_dims"] == {"t": 6, "v": 4} and doc["label_names"] == list(LABELS)
    test_ids = json.loads((out / "folds.json").read_text())["folds"][1]["test"]
    rows = np.flatnonzero(np.isin(fs.utterance_id, test_ids))
    test = TensorData.from_features(fs.select(("t", "v")).subset(rows))
    with torch.no_grad():
        pred = model(test.inputs).logits.argmax(dim=1)
    assert float((pred == test.targets).double().mean()) == pytest.approx(fold["accuracy"])
    with (out / "fold_1" / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    assert [r["utterance_id"] for r in predictions] == sorted(test_ids)
    assert [r["predicted"] for r in predictions] == [LABELS[i] for i in pred.tolist()]
    assert {"gate_t", "gate_v"} <= set(predictions[0])
    default_model, _ = load_trained_model(out)
    assert default_model is not None


def test_holdout_protocol_runs_one_fold(tmp_path: Path) -> None:
    fs = synthetic()
    fs.split = np.array(["train"] * 80 + ["dev"] * 20 + ["test"] * 20)
    metrics = train_and_evaluate(fs, tiny_params(protocol="holdout"), ("t", "a", "v"), "hjcag", tmp_path / "h",
                                 quiet=True)
    assert metrics["protocol"] == "holdout"
    assert [(f["n_train"], f["n_val"], f["n_test"]) for f in metrics["folds"]] == [(80, 20, 20)]
    assert metrics["accuracy"]["std"] == 0.0


@pytest.mark.parametrize("model_name", ["concat", "late", "mult"])
def test_baselines_run_in_the_same_harness(tmp_path: Path, model_name: str) -> None:
    params = tiny_params(epochs=2).with_overrides(model={"mult": {"d_model": 8, "heads": 2, "layers": 1}})
    metrics = train_and_evaluate(synthetic(), params, ("t", "a", "v"), model_name, tmp_path / model_name, quiet=True)
    assert metrics["model"] == model_name and len(metrics["folds"]) == 3
    model, doc = load_trained_model(tmp_path / model_name)
    assert doc["model"] == model_name and type(model).__name__ != "HJCAG"


def test_unknown_model_and_device_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        train_and_evaluate(synthetic(), tiny_params(), ("t",), "transformer", tmp_path / "x", quiet=True)
    with pytest.raises(ConfigError, match=r"train\.device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto") == CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_on_cuda(tmp_path: Path) -> None:
    assert resolve_device("auto").type == "cuda"
    fs = synthetic(noise=0.5)
    metrics = train_and_evaluate(fs, tiny_params(device="cuda", epochs=10, patience=10), ("t", "a", "v"),
                                 "hjcag", tmp_path / "gpu", quiet=True)
    assert metrics["accuracy"]["mean"] > 0.8
    model, _ = load_trained_model(tmp_path / "gpu")  # weights saved from GPU load on CPU
    assert next(model.parameters()).device.type == "cpu"


def test_torch_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="num_threads"), torch_threads(-1):
        pass


def test_seeds_train_every_fold_once_per_seed_and_reproduce_to_the_digit(tmp_path: Path) -> None:
    fs = synthetic()
    params = tiny_params(epochs=3, folds=2, seeds=[1, 2])
    metrics = train_and_evaluate(fs, params, ("t", "a"), "hjcag", tmp_path / "a", quiet=True)
    units = sorted(p.name for p in (tmp_path / "a").glob("fold_*"))
    assert units == ["fold_0_seed_1", "fold_0_seed_2", "fold_1_seed_1", "fold_1_seed_2"]
    assert metrics["seeds"] == [1, 2] and metrics["n_folds"] == 2 and len(metrics["folds"]) == 4
    accs = [f["accuracy"] for f in metrics["folds"]]
    assert metrics["accuracy"]["mean"] == pytest.approx(np.mean(accs))  # over folds x seeds
    assert metrics["accuracy"]["std"] == pytest.approx(np.std(accs))
    doc = json.loads((tmp_path / "a" / "model_config.json").read_text())
    assert doc["weights"]["default"] in {f"{u}/model.safetensors" for u in units} and len(doc["weights"]["folds"]) == 4
    # the seeds differ from each other, and the same seeds reproduce every number
    by_seed = {f["unit"]: f["best_val_loss"] for f in metrics["folds"]}
    assert by_seed["fold_0_seed_1"] != by_seed["fold_0_seed_2"]
    train_and_evaluate(fs, params, ("t", "a"), "hjcag", tmp_path / "b", quiet=True)
    assert read_run(tmp_path / "a") == read_run(tmp_path / "b")


# ------------------------------------------------------------------------- modality dropout and class weights


class IgnoresPresence(torch.nn.Module):
    """The model called as the loop called it before modality dropout existed: no presence mask."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> Any:
        return self.inner(inputs)


def test_drop_modalities_never_drops_every_modality_of_a_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    present = drop_modalities(5000, 3, 0.6, gen)
    assert present.shape == (5000, 3)
    assert present.any(dim=1).all()
    assert (~present).any(dim=1).float().mean() > 0.5  # it does drop
    assert (present.sum(dim=1) == 1).any() and (present.sum(dim=1) == 3).any()
    # p = 0, or a single modality: everything present and no random number drawn.
    before = gen.get_state()
    assert drop_modalities(7, 3, 0.0, gen).all() and drop_modalities(7, 1, 0.6, gen).all()
    assert torch.equal(gen.get_state(), before)


def test_zero_modality_dropout_reproduces_training_without_a_presence_mask_bit_for_bit() -> None:
    params = tiny_params(epochs=4, patience=4, modality_dropout=0.0)
    train, val = fold_data(synthetic())
    with_mask = train_fold(new_model(params), train, val, params.train, seed=3, device=CPU, quiet=True)
    without = train_fold(IgnoresPresence(new_model(params)), train, val, params.train, seed=3, device=CPU, quiet=True)
    assert with_mask.history == without.history
    assert with_mask.best_state.keys() == {k.removeprefix("inner.") for k in without.best_state}
    for k, v in with_mask.best_state.items():
        assert torch.equal(v, without.best_state[f"inner.{k}"]), k


def test_modality_dropout_masks_training_batches_only_and_is_deterministic() -> None:
    params = tiny_params(epochs=3, patience=3, modality_dropout=0.5)
    train, val = fold_data(synthetic())
    masks: list[torch.Tensor | None] = []

    class Spy(IgnoresPresence):
        def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> Any:
            masks.append(None if present is None else present.clone())
            return self.inner(inputs, present)

    first = train_fold(Spy(new_model(params)), train, val, params.train, seed=3, device=CPU, quiet=True)
    train_masks = [m for m in masks if m is not None]
    assert len(train_masks) == 3 * -(-len(train) // 16)  # every training batch got a mask ...
    assert len(masks) - len(train_masks) == 3 * -(-len(val) // 16)  # ... validation batches none (all present)
    stacked = torch.cat(train_masks)
    assert stacked.any(dim=1).all() and not stacked.all()
    again = train_fold(new_model(params), train, val, params.train, seed=3, device=CPU, quiet=True)
    assert again.history == first.history
    plain = train_fold(new_model(params), train, val, tiny_params(epochs=3, patience=3).train, seed=3, device=CPU,
                       quiet=True)
    assert plain.history != first.history


def test_modality_dropout_resumes_from_a_checkpoint_bit_for_bit(tmp_path: Path) -> None:
    params = tiny_params(epochs=4, patience=4, modality_dropout=0.4)
    train, val = fold_data(synthetic())
    reference = train_fold(new_model(params), train, val, params.train, seed=5, device=CPU, quiet=True)

    def stop(fold: int, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train_fold(new_model(params), train, val, params.train, seed=5, device=CPU, checkpoint_path=ckpt,
                   on_epoch=stop, quiet=True)
    resumed = train_fold(new_model(params, seed=99), train, val, params.train, seed=5, device=CPU,
                         checkpoint_path=ckpt, quiet=True)
    assert resumed.history == reference.history
    for k, v in reference.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_sqrt_class_weights_are_square_roots_of_inverse_frequencies() -> None:
    targets = torch.tensor([0] * 16 + [1] * 4 + [2])
    w = class_weights(targets, 3, "sqrt")
    assert w is not None
    torch.testing.assert_close(w[0] / w[2], torch.tensor(0.25))  # sqrt(1 / 16) against sqrt(1 / 1)
    torch.testing.assert_close(w[0] / w[1], torch.tensor(0.5))
    assert float((torch.tensor([16.0, 4.0, 1.0]) * w).sum()) == pytest.approx(21.0)  # mean weight per sample: 1


def test_balanced_class_weights_are_inverse_frequencies_of_the_training_targets() -> None:
    targets = torch.tensor([0] * 6 + [1] * 3 + [2])
    assert class_weights(targets, 4, "none") is None
    w = class_weights(targets, 4, "balanced")
    assert w is not None
    counts = torch.tensor([6.0, 3.0, 1.0, 0.0])
    # 1 / n_c (an absent class counts as 1), scaled so that the mean weight over the training samples is 1.
    expected = torch.tensor([1 / 6, 1 / 3, 1.0, 1.0]) * 10 / 3
    torch.testing.assert_close(w, expected)
    assert float((counts * w).sum()) == pytest.approx(10.0)
    torch.testing.assert_close(counts[:3] * w[:3], torch.full((3,), 10 / 3))  # each class: the same total weight
    # The weighted cross-entropy is sum_i w_{y_i} l_i / sum_i w_{y_i}: the rare class counts 6x the common one.
    logits = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    per_sample = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    weighted = torch.nn.functional.cross_entropy(logits, targets, weight=w)
    by_class = torch.stack([per_sample[targets == c].mean() for c in range(3)])
    torch.testing.assert_close(weighted, by_class.mean())  # balanced: the mean of the per-class mean losses
    assert not torch.isclose(weighted, per_sample.mean())


def test_balanced_class_weights_weight_the_training_and_validation_loss() -> None:
    # lr = 0: the model never changes, so the losses are those of the initial model, computable by hand.
    fs = synthetic()
    train, val = fold_data(fs)
    keep = torch.cat([torch.nonzero(train.targets == 0).flatten(), torch.nonzero(train.targets != 0).flatten()[:20]])
    train = TensorData({m: x[keep] for m, x in train.inputs.items()}, train.targets[keep], train.num_classes)
    assert train.num_classes == 3
    params = tiny_params(epochs=1, lr=0.0, class_weights="balanced")
    result = train_fold(new_model(params), train, val, params.train, seed=0, device=CPU, quiet=True)
    unweighted = train_fold(new_model(params), train, val, tiny_params(epochs=1, lr=0.0).train, seed=0, device=CPU,
                            quiet=True)
    model = new_model(params)
    logits, _ = predict(model, val, 64, CPU)
    w = class_weights(train.targets, 3, "balanced")
    assert result.history[0]["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, val.targets,
                                                                                                   weight=w)))
    assert unweighted.history[0]["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits,
                                                                                                      val.targets)))
    assert result.history[0]["val_loss"] != pytest.approx(unweighted.history[0]["val_loss"])
    assert result.history[0]["train_loss"] != pytest.approx(unweighted.history[0]["train_loss"])


@pytest.mark.parametrize(("key", "value"), [("modality_dropout", 1.0), ("modality_dropout", -0.1),
                                            ("class_weights", "inverse")])
def test_bad_modality_dropout_or_class_weights_are_config_errors(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"train.{key}"):  # refused on load, before anything runs
        tiny_params(**{key: value})
    params = tiny_params()
    train, val = fold_data(synthetic())
    with pytest.raises(ConfigError, match=f"train.{key}"):  # and by the loop, whoever builds its TrainConfig
        train_fold(new_model(params), train, val, dataclasses.replace(params.train, **{key: value}), seed=0,
                   device=CPU, quiet=True)


def test_a_multimodal_run_reports_every_modality_subset(tmp_path: Path) -> None:
    from hjcag.train.evaluate import evaluate_run

    fs = synthetic()
    metrics = train_and_evaluate(fs, tiny_params(epochs=3, folds=2), ("t", "a", "v"), "hjcag", tmp_path / "r",
                                 quiet=True)
    rows = {r["modalities"]: r for r in metrics["robustness"]}
    assert list(rows) == ["text+audio+visual", "text+audio", "text+visual", "audio+visual", "text", "audio",
                          "visual"]
    full = rows["text+audio+visual"]  # all present: exactly the run's own test scores
    for name in ("accuracy", "weighted_f1", "macro_f1"):
        assert full[name]["mean"] == pytest.approx(metrics[name]["mean"])
    assert "## Missing modalities" in (tmp_path / "r" / "report.md").read_text()
    summary = evaluate_run(tmp_path / "r", tmp_path / "eval")  # what `dvc metrics show` lists
    assert summary["only_text+audio_accuracy"] == pytest.approx(rows["text+audio"]["accuracy"]["mean"])
    assert len([k for k in summary if k.startswith("only_")]) == 14
