"""How a trained run holds up when modalities are missing: each fold's model on its own test part, with every
non-empty subset of the run's modalities present (7 rows for t, a, v), the others masked as the endpoint masks them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hjcag.artifacts import MODEL_CONFIG_FILE, WEIGHTS_FILE, build_trained_model, read_json, trained_model_config
from hjcag.data.features_file import FeatureSet
from hjcag.params import MODALITY_NAMES
from hjcag.train.folds import Fold
from hjcag.train.loop import TensorData, predict
from hjcag.train.metrics import SCALAR_METRICS, classification_metrics, mean_std


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, the full set first, then by size: (t, a, v), (t, a), (t, v), (a, v), (t,), ..."""
    return [s for k in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, k)]


def subset_name(subset: Sequence[str]) -> str:
    return "+".join(MODALITY_NAMES[m] for m in subset)


def robustness_table(fs: FeatureSet, folds: Sequence[Fold], results: Sequence[Mapping[str, Any]], run_dir: Path,
                     batch_size: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per modality subset: accuracy, weighted and macro F1 (mean ± std over the run's folds x seeds)."""
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    by_index = {f.index: f for f in folds}
    units = []
    for result in results:
        test = fs.subset(by_index[result["fold"]].test_idx)
        model = build_trained_model(doc, run_dir / result["unit"] / WEIGHTS_FILE).to(device)
        units.append((model, TensorData.from_features(test, trained_model_config(doc, result["unit"])), test.targets))
    rows = []
    for subset in modality_subsets(fs.modalities):
        present = torch.tensor([m in subset for m in fs.modalities])
        scores = []
        for model, data, targets in units:
            mask = present.expand(len(data), -1)
            logits, _ = predict(model, data, batch_size, device, mask)
            scores.append(classification_metrics(targets, logits.argmax(dim=1).numpy(), fs.label_names))
        rows.append({"modalities": subset_name(subset),
                     **{name: mean_std([s[name] for s in scores]) for name in SCALAR_METRICS}})
    return rows
