"""Conversation context (issue 10; docs/model.md, "Conversation context"): windows follow the dialogue's order and
never leave it, causal models never look ahead, folds never share context, `context: none` is the paper's model,
and the CLI trains, evaluates and ablates with it."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from hjcag.artifacts import BASE, CONTEXT
from hjcag.cli import main
from hjcag.data.conversation import context_windows
from hjcag.data.features_file import FeatureSet, load_features, save_features
from hjcag.data.synthetic import plan_dataset
from hjcag.errors import ConfigError
from hjcag.model.context import ContextBatch, ConversationContext
from hjcag.model.factory import MODEL_NAMES, build_model
from hjcag.model.hjcag import HJCAG
from hjcag.params import ModelConfig, TrainConfig
from hjcag.train.fit import fit_model
from hjcag.train.folds import make_folds
from hjcag.train.loop import TensorData, make_optimizer, predict
from params_fixtures import context_params

CPU = torch.device("cpu")


def dialogue_features(n_dialogues: int = 6, seed: int = 0) -> FeatureSet:
    """Dialogues of 3..7 turns, rows shuffled (order is only in `order`), two speakers, text + audio."""
    rng = np.random.default_rng(seed)
    ids, groups, orders, speakers = [], [], [], []
    for d in range(n_dialogues):
        for u in range(int(rng.integers(3, 8))):
            ids.append(f"d{d}_u{u}")
            groups.append(f"d{d}")
            orders.append(float(u))
            speakers.append("A" if rng.random() < 0.5 else "B")
    n = len(ids)
    perm = rng.permutation(n)
    pick = lambda xs: np.array(xs)[perm]  # noqa: E731
    return FeatureSet(
        utterance_id=pick(ids), label=np.array(["x", "y", "z"])[rng.integers(0, 3, n)], group=pick(groups),
        features={m: rng.normal(size=(n, 4, d)).astype(np.float32) for m, d in (("t", 6), ("a", 5))},
        speaker=pick(speakers), order=pick(orders), label_names=("x", "y", "z"),
    )


def config(context: str = "gru", direction: str = "causal", k: int = 3) -> ModelConfig:
    return ModelConfig(seq_len=4, widths={"t": 8, "a": 8, "v": 8}, gate_width=8, classifier_hidden=8,
                       mult={"d_model": 8, "heads": 2, "layers": 1}, context=context, context_window=k,
                       context_direction=direction)


def context_model(name: str, fs: FeatureSet, cfg: ModelConfig) -> torch.nn.Module:
    """An untrained context model whose context head is not at its zero start (so the context shows)."""
    torch.manual_seed(0)
    model = build_model(name, fs.dims, 3, cfg).eval()
    torch.nn.init.normal_(model.head[-1].weight)
    return model


def test_windows_follow_the_dialogue_order_and_never_leave_the_dialogue() -> None:
    fs = dialogue_features()
    windows = context_windows(fs, k=2, direction="bidirectional")
    position = {uid: (uid.split("_")[0], int(uid.split("_u")[1])) for uid in fs.utterance_id}
    for row, uid in enumerate(fs.utterance_id):
        dialogue, turn = position[uid]
        for column, other in enumerate(windows.index[row]):
            if other < 0:
                continue
            assert position[fs.utterance_id[other]] == (dialogue, turn + column - 2)
            same = fs.speaker[other] == fs.speaker[row]
            assert windows.speaker[row, column] == (1 if same else 0)
        assert windows.index[row, 2] == row  # the centre is the utterance itself
    causal = context_windows(fs, k=2, direction="causal")
    assert causal.index.shape[1] == 3 and np.array_equal(causal.index, windows.index[:, :3])


def test_context_without_an_order_is_a_clear_error() -> None:
    fs = dataclasses.replace(dialogue_features(), order=None)
    with pytest.raises(ConfigError, match="needs the utterances' order"):
        TensorData.from_features(fs, config())


def test_the_order_key_travels_through_the_features_file(tmp_path: Path) -> None:
    fs = dialogue_features()
    back = load_features(save_features(tmp_path / "f.npz", fs), seq_len=4)
    assert np.array_equal(back.order, fs.order)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_causal_model_never_looks_ahead(kind: str, name: str) -> None:
    """Appending later utterances (here: every dialogue's last turn) never changes an earlier prediction."""
    fs = dialogue_features()
    model = context_model(name, fs, config(kind))
    full, _ = predict(model, TensorData.from_features(fs, config(kind)), 5, CPU)
    last = {g: max(o for o, h in zip(fs.order, fs.group, strict=True) if h == g) for g in set(fs.group)}
    keep = np.array([o < last[g] for o, g in zip(fs.order, fs.group, strict=True)])
    shorter, _ = predict(model, TensorData.from_features(fs.subset(np.flatnonzero(keep)), config(kind)), 5, CPU)
    torch.testing.assert_close(shorter, full[keep], rtol=1e-5, atol=1e-6)
    # ... while a bidirectional model does read the following turns (so the check above can fail)
    both = context_model(name, fs, config(kind, "bidirectional"))
    full, _ = predict(both, TensorData.from_features(fs, config(kind, "bidirectional")), 5, CPU)
    shorter, _ = predict(both, TensorData.from_features(fs.subset(np.flatnonzero(keep)),
                                                        config(kind, "bidirectional")), 5, CPU)
    assert not torch.allclose(shorter, full[keep], atol=1e-4)


def test_the_context_of_a_fold_never_reaches_its_test_dialogues() -> None:
    fs = dialogue_features(n_dialogues=10)
    for fold in make_folds(fs, "cv5", 5, 0.2, 13):
        test_ids = set(fs.utterance_id[fold.test_idx])
        for part in (fold.train_idx, fold.val_idx):
            sub = fs.subset(part)
            data = TensorData.from_features(sub, config())
            reached = {sub.utterance_id[i] for i in data.windows.index.ravel() if i >= 0}
            assert reached and not reached & test_ids
            for rows, extra in data.batches(7, torch.Generator().manual_seed(0)):  # whole dialogues per batch
                window = extra["context"].window
                assert int(window.max()) < len(rows)
                groups = sub.group[rows.numpy()]
                for b in range(len(rows)):
                    assert set(groups[window[b][window[b] >= 0].numpy()]) == {groups[b]}


def test_a_new_context_model_starts_as_its_context_free_base() -> None:
    """The context head's last layer starts at zero: before training, context changes no logit."""
    fs = dialogue_features()
    cfg = config("gru")
    torch.manual_seed(0)
    model = build_model("hjcag", fs.dims, 3, cfg).eval()
    data = TensorData.from_features(fs, cfg)
    with_context, _ = predict(model, data, 5, CPU)
    alone, _ = predict(model.base, TensorData.from_features(fs), 5, CPU)
    torch.testing.assert_close(with_context, alone)


def test_train_context_lr_gives_the_context_layer_its_own_rate() -> None:
    fs = dialogue_features()
    model = build_model("hjcag", fs.dims, 3, config("gru"))
    same = make_optimizer(model, TrainConfig(lr=3e-4))
    assert [g["lr"] for g in same.param_groups] == [3e-4]
    own = make_optimizer(model, TrainConfig(lr=3e-4, context_lr=1e-3))
    base, layer = own.param_groups
    assert (base["lr"], layer["lr"]) == (3e-4, 1e-3)
    assert {id(p) for p in base["params"]} == {id(p) for p in model.base.parameters()}
    assert {id(p) for p in layer["params"]} == {id(p) for n, p in model.named_parameters() if not n.startswith("base.")}
    assert len(base["params"]) + len(layer["params"]) == len(list(model.parameters()))
    paper = build_model("hjcag", fs.dims, 3, config("none"))  # no context layer: the setting has nothing to act on
    assert len(make_optimizer(paper, TrainConfig(lr=3e-4, context_lr=1e-3)).param_groups) == 1


def test_a_warm_started_context_model_first_trains_exactly_the_context_free_model() -> None:
    fs = dialogue_features(n_dialogues=8, seed=3)
    val_rows = np.isin(fs.group, ["d0", "d1"])
    train, val = fs.subset(np.flatnonzero(~val_rows)), fs.subset(np.flatnonzero(val_rows))
    cfg = TrainConfig(epochs=4, batch_size=8, lr=3e-3, patience=4, context_warm_start=True)
    alone = fit_model("hjcag", train, val, config("none"), cfg, seed=7, device=CPU, quiet=True)
    warm = fit_model("hjcag", train, val, config("gru"), cfg, seed=7, device=CPU, quiet=True)
    assert alone.stages == {} and isinstance(alone.model, HJCAG)
    base = warm.stages[BASE]  # which model the fold keeps: tests/test_kept_model.py
    assert base.history == alone.training.history  # stage 1 is the context: none run, epoch for epoch
    assert base.best_state.keys() == alone.training.best_state.keys()
    for name, value in alone.training.best_state.items():
        assert torch.equal(base.best_state[name], value), name
    # Stage 2 starts from the trained context-free model (the context head at zero): its first epoch already differs
    # from a cold start's.
    cold = fit_model("hjcag", train, val, config("gru"), dataclasses.replace(cfg, context_warm_start=False), seed=7,
                     device=CPU, quiet=True)
    assert cold.stages == {} and cold.training.history != warm.stages[CONTEXT].history


def test_the_progress_of_a_warm_start_names_each_stage(caplog: pytest.LogCaptureFixture) -> None:
    """In a log, stage 2's epochs must not read as the fold starting over: each stage's progress lines name it."""
    fs = dialogue_features(n_dialogues=8, seed=3)
    val_rows = np.isin(fs.group, ["d0", "d1"])
    train, val = fs.subset(np.flatnonzero(~val_rows)), fs.subset(np.flatnonzero(val_rows))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, patience=3, context_warm_start=True)
    with caplog.at_level(logging.INFO, logger="hjcag.progress"):
        fit_model("hjcag", train, val, config("gru"), cfg, seed=7, device=CPU, fold_index=2)
        fit_model("hjcag", train, val, config("none"), cfg, seed=7, device=CPU, fold_index=3)
    names = [r.getMessage().split(":")[0] for r in caplog.records if r.name == "hjcag.progress"]
    assert list(dict.fromkeys(names)) == ["fold 2 base", "fold 2 context", "fold 3"]


def test_context_none_is_the_paper_model_with_the_same_batches() -> None:
    fs = dialogue_features()
    none = config("none")
    assert type(build_model("hjcag", fs.dims, 3, none)) is HJCAG
    assert isinstance(build_model("hjcag", fs.dims, 3, config("gru")), ConversationContext)
    data = TensorData.from_features(fs, none)
    assert data.windows is None
    batches = [idx for idx, extra in data.batches(4, torch.Generator().manual_seed(5))]
    assert all(extra == {} for _, extra in data.batches(4))
    assert torch.equal(torch.cat(batches), torch.randperm(len(fs), generator=torch.Generator().manual_seed(5)))


def test_states_from_outside_the_batch_give_the_same_prediction() -> None:
    """Serving sends the previous turns' fused vectors (states) instead of the turns: same logits."""
    fs = dialogue_features()
    cfg = config("transformer")
    model = context_model("hjcag", fs, cfg)
    data = TensorData.from_features(fs, cfg)
    full, _ = predict(model, data, 100, CPU)
    dialogue = data.windows.dialogues[0]
    row = int(dialogue[-1])  # the last turn of a dialogue, with up to k = 3 turns before it
    history = [int(r) for r in data.windows.index[row, :3] if r >= 0]
    with torch.no_grad():
        states = model(data.batch(torch.tensor(history), CPU)[0]).fused
        window = torch.full((1, 4), -1, dtype=torch.long)
        window[0, 3 - len(history):3] = torch.arange(1, len(history) + 1)
        window[0, 3] = 0
        speaker = torch.from_numpy(data.windows.speaker[row:row + 1])
        inputs, _ = data.batch(torch.tensor([row]), CPU)
        one = model(inputs, context=ContextBatch(window, speaker, states)).logits
    torch.testing.assert_close(one[0], full[row], rtol=1e-5, atol=1e-6)


def test_the_demo_context_cue_makes_echo_turns_and_leaves_the_default_data_alone() -> None:
    plain = plan_dataset("tiny", 13)
    assert not any(u.echo for u in plain)
    cued = plan_dataset("tiny", 13, context_cue=0.4)
    echoes = [i for i, u in enumerate(cued) if u.echo]
    assert 0.25 < len(echoes) / len(cued) < 0.45
    assert all(cued[i].utterance_id > 0 and cued[i].emotion == cued[i - 1].emotion for i in echoes)
    with pytest.raises(ConfigError, match="context_cue"):
        plan_dataset("tiny", 13, context_cue=1.5)


@pytest.fixture()
def params(tmp_path: Path) -> Path:
    return context_params(tmp_path / "params.yaml", {"folds": 2, "epochs": 2, "batch_size": 8, "lr": 1e-3,
                                                     "patience": 2, "device": "cpu"})


def test_the_cli_trains_and_evaluates_a_context_model(params: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    features = save_features(tmp_path / "features.npz", dialogue_features(n_dialogues=8))
    run_dir = tmp_path / "run"
    assert main(["train", "--features", str(features), "--params", str(params), "--modalities", "t,a",
                 "--labels", "x,y,z", "--out", str(run_dir)]) == 0
    comparison = json.loads((run_dir / "metrics.json").read_text())["context_comparison"]  # warm start: paired
    gain = comparison["difference"]["weighted_f1"]
    assert (f"conversation context kept in {comparison['kept']} of 2 fold(s); weighted F1 {100 * gain['mean']:+.2f} "
            f"± {100 * gain['se']:.2f} against the same folds without it") in capsys.readouterr().out
    recorded = json.loads((run_dir / "model_config.json").read_text())["model_config"]
    assert (recorded["context"], recorded["context_window"], recorded["context_direction"]) == ("gru", 3, "causal")
    assert main(["evaluate", "--run", str(run_dir), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    per_fold = []  # each fold's accuracy recomputed from the predictions it wrote for its test rows
    for fold in sorted(run_dir.glob("fold_*")):
        with (fold / "predictions.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        per_fold.append(np.mean([r["label"] == r["predicted"] for r in rows]))
    assert metrics["accuracy"] == pytest.approx(np.mean(per_fold), abs=1e-9)
    assert "only_text_accuracy" in metrics and "only_audio_accuracy" in metrics
    assert metrics["without_context_weighted_f1"] == pytest.approx(comparison["without_context"]["weighted_f1"]["mean"])
