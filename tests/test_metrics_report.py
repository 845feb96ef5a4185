"""Metrics against values worked out by hand, aggregation across folds, and the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hjcag.model.validation import validation_scores
from hjcag.train.metrics import aggregate, classification_metrics, context_comparison, mean_std
from hjcag.train.report import markdown_report, write_report

LABELS = ("ang", "hap", "sad")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_classification_metrics_match_hand_computed_values() -> None:
    # true 0 0 0 1 1 2 / predicted 0 0 1 1 2 2
    # ang: tp 2 fp 0 fn 1 -> P 1,   R 2/3 -> F1 0.8
    # hap: tp 1 fp 1 fn 1 -> P 1/2, R 1/2 -> F1 0.5
    # sad: tp 1 fp 1 fn 0 -> P 1/2, R 1   -> F1 2/3
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class_f1"] == pytest.approx({"ang": 0.8, "hap": 0.5, "sad": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_validation_scores_match_hand_computed_values() -> None:
    # rows: logits (0, 0) true 0 -> p 1/2, predicted 0; (0, ln 3) true 1 -> p 3/4, predicted 1;
    # (ln 3, 0) true 1 -> p 1/4, predicted 0. Both classes: P and R are 1/2 and 1 -> F1 2/3.
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)], [math.log(3), 0.0]])
    targets = torch.tensor([0, 1, 1])
    nll = [math.log(2), math.log(4 / 3), math.log(4)]
    plain = validation_scores(logits, targets)
    assert plain["val_loss"] == pytest.approx(sum(nll) / 3)
    assert plain["val_weighted_f1"] == pytest.approx(2 / 3)
    weighted = validation_scores(logits, targets, torch.tensor([1.0, 3.0]))  # the training loss's class weights
    assert weighted["val_loss"] == pytest.approx((nll[0] + 3 * nll[1] + 3 * nll[2]) / 7)
    assert weighted["val_weighted_f1"] == pytest.approx(2 / 3)


def test_a_class_absent_from_a_fold_has_undefined_f1_and_is_left_out_of_its_mean() -> None:
    fold_a = classification_metrics([0, 1, 0, 1], [0, 1, 1, 1], LABELS)  # no 'sad' at all
    assert fold_a["per_class_f1"]["sad"] is None
    assert fold_a["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # over the classes present
    fold_b = classification_metrics([0, 1, 2], [0, 1, 2], LABELS)
    agg = aggregate([fold_a, fold_b], LABELS)
    assert agg["per_class_f1"]["sad"] == {"mean": 1.0, "std": 0.0}
    assert agg["per_class_f1"]["ang"]["mean"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert agg["accuracy"]["mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert agg["accuracy"]["std"] == pytest.approx(0.125)  # population std of {0.75, 1.0}
    assert agg["confusion"] == [[2, 1, 0], [0, 3, 0], [0, 0, 1]]


def test_mean_std() -> None:
    assert mean_std([0.5, 0.7]) == pytest.approx({"mean": 0.6, "std": 0.1})
    assert mean_std([0.42]) == {"mean": 0.42, "std": 0.0}
    assert mean_std([None, None]) == {"mean": None, "std": None}


def test_metrics_reject_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], LABELS)


def sample_metrics() -> tuple[dict, dict]:
    folds = []
    for k, (true, pred) in enumerate([([0, 0, 1, 2, 2], [0, 1, 1, 2, 0]), ([0, 1, 1, 2], [0, 1, 1, 1])]):
        folds.append({"fold": k, **classification_metrics(true, pred, LABELS), "n_train": 10, "n_val": 2,
                      "n_test": len(true), "best_epoch": 3 + k, "epochs_run": 6 + k})
    metrics = {**aggregate(folds, LABELS), "folds": folds, "protocol": "cv5", "model": "hjcag",
               "modalities": ["t", "a"], "labels": list(LABELS), "n_utterances": 9, "dataset": "demo"}
    histories = {
        k: [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e + 0.05 * e, "val_acc": 0.5, "lr": 1e-3}
            for e in range(1, 7 + k)]
        for k in range(2)
    }
    return metrics, histories


def test_report_files_are_written_with_the_numbers(tmp_path: Path) -> None:
    metrics, histories = sample_metrics()
    paths = write_report(tmp_path, metrics, histories)
    for name in ("confusion_matrix.png", "folds.png", "learning_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 2000, name
    report = (tmp_path / "report.md").read_text()
    assert paths["report"] == tmp_path / "report.md"
    acc, wf1 = metrics["accuracy"], metrics["weighted_f1"]
    assert f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}" in report
    assert f"{100 * wf1['mean']:.2f} ± {100 * wf1['std']:.2f}" in report
    for fold in metrics["folds"]:
        assert f"| {fold['fold']} | {100 * fold['accuracy']:.2f} | {100 * fold['weighted_f1']:.2f} |" in report
    for label in LABELS:
        stat = metrics["per_class_f1"][label]
        assert f"| {label} | {100 * stat['mean']:.2f} ± {100 * stat['std']:.2f} |" in report
    for name in ("confusion_matrix.png", "folds.png", "learning_curves.png"):
        assert f"({name})" in report
    # the summed confusion matrix is in the report as counts
    assert "| ang | 2 | 1 | 0 |" in report
    json.dumps(metrics)  # everything the report reads is JSON-serialisable


def test_report_marks_undefined_per_class_f1() -> None:
    metrics, _ = sample_metrics()
    metrics["folds"][1]["per_class_f1"]["ang"] = None
    assert "–" in markdown_report(metrics)


def test_report_says_in_how_many_folds_a_warm_started_context_was_kept() -> None:
    metrics, _ = sample_metrics()
    assert "Conversation context" not in markdown_report(metrics)  # no context: no line
    for i, fold in enumerate(metrics["folds"]):
        fold["context_kept"] = i != 1  # the second fold fell back to the context-free model
    n = len(metrics["folds"])
    report = markdown_report(metrics)
    assert f"Conversation context kept in {n - 1} of {n} folds" in report
    assert f"in fold(s) {metrics['folds'][1]['fold']} the model is the context-free one" in report


def test_with_and_without_context_are_compared_fold_by_fold() -> None:
    """Three folds, with minus without weighted F1 +0.10, 0 (context dropped), +0.02: mean +0.04, standard error
    std(ddof=1) / sqrt(3) = 0.052915 / 1.732051 = 0.030551; no comparison while a fold has no stage-1 scores."""
    folds = [{"accuracy": a, "weighted_f1": w, "macro_f1": m, "context_kept": kept,
              "without_context": {"accuracy": a0, "weighted_f1": w0, "macro_f1": m0}}
             for a, w, m, a0, w0, m0, kept in ((0.6, 0.5, 0.4, 0.5, 0.4, 0.4, True),
                                              (0.7, 0.6, 0.5, 0.7, 0.6, 0.5, False),
                                              (0.8, 0.7, 0.6, 0.8, 0.68, 0.5, True))]
    comparison = context_comparison(folds)
    assert comparison is not None and (comparison["n"], comparison["kept"]) == (3, 2)
    assert comparison["without_context"]["weighted_f1"]["mean"] == pytest.approx((0.4 + 0.6 + 0.68) / 3)
    assert comparison["difference"]["weighted_f1"]["mean"] == pytest.approx(0.04)
    assert comparison["difference"]["weighted_f1"]["se"] == pytest.approx(0.030551, abs=1e-6)
    assert comparison["difference"]["accuracy"]["mean"] == pytest.approx(0.1 / 3)
    assert context_comparison([*folds[:2], {k: v for k, v in folds[2].items() if k != "without_context"}]) is None

    metrics, _ = sample_metrics()  # two folds: the first kept its context (+0.10 each), the second dropped it (0)
    for fold, kept in zip(metrics["folds"], (True, False), strict=True):
        fold["context_kept"] = kept
        fold["without_context"] = {k: fold[k] - (0.1 if kept else 0.0) for k in ("accuracy", "weighted_f1", "macro_f1")}
    metrics = {**metrics, **aggregate(metrics["folds"], LABELS)}
    report = markdown_report(metrics)
    assert "| with minus without (mean ± standard error over 2 folds) | +5.00 ± 5.00 | +5.00 ± 5.00 | +5.00 ± 5.00 |" \
        in report


def test_the_html_report_embeds_its_figures_and_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    import base64
    import re

    from hjcag.train.html_report import write_html_report

    metrics, histories = sample_metrics()
    write_report(tmp_path, metrics, histories)
    page = write_html_report(tmp_path).read_text()
    embedded = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [base64.b64decode(x) for x in embedded] == [
        (tmp_path / name).read_bytes() for name in ("confusion_matrix.png", "folds.png", "learning_curves.png")]
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    acc = metrics["accuracy"]
    assert f"<td>Accuracy</td><td>{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}</td>" in page
    assert "<td>ang</td><td>2</td><td>1</td><td>0</td>" in page  # the confusion matrix table
    assert "<th>true \\ predicted</th>" in page and '<a href="#folds.png">' in page
    assert page.count("<table>") == page.count("</table>") == 4
