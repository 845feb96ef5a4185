"""Print README "Real data" table rows from a real_text (or real_meld_text) results file, rounded as the README prints.

    python benchmarks/results_table.py benchmarks/results/real_meld_text-20261206T050641Z.json

Two tables: one row per recipe (dev and test accuracy / weighted F1 ± its spread over seeds / macro F1, test per-class
F1), and one row per context recipe against ``meld`` on the same seeds (mean ± standard error of the weighted F1
differences, each seed's test difference, in how many seeds the context was kept). The last column names the file
and the commit that ran it; tests/test_readme_results.py checks the README's rows against the file. Recipe names are
printed as keys: the README words them. A file that records its dataset (``dataset``: any real_text run) is named
first, above the tables: one file holds one dataset, so a row's key is unique within its file, whichever the dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def pct(x: float, places: int = 1, sign: bool = False) -> str:
    return f"{100 * x:{'+' if sign else ''}.{places}f}"


def split_cell(s: dict[str, Any]) -> str:
    spread = f" ± {pct(s['weighted_f1_std'])}" if s.get("units", 1) > 1 else ""
    return f"{pct(s['accuracy'])} / {pct(s['weighted_f1'])}{spread} / {pct(s['macro_f1'])}"


def dataset_line(dataset: dict[str, Any]) -> str:
    """Which data the rows are on: name, kind, files (sha256, 12 digits), labels in column order, and the trim."""
    files = ", ".join(f"{name} {digest[:12]}" for name, digest in dataset["sha256"].items())
    trim = f"; first {dataset['max_dialogues']} dialogues of each split" if dataset.get("max_dialogues") else ""
    return (f"dataset: {dataset['name']} ({dataset['kind']}: {files}); per-class F1 in the order "
            f"{' '.join(dataset['labels'])}{trim}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results file of benchmarks/real_text.py or real_meld_text.py")
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    path = args.results.resolve().relative_to(REPO) if args.results.resolve().is_relative_to(REPO) else args.results
    commit = doc["git"]["commit"][:7] + (" (dirty)" if doc["git"]["dirty"] else "")
    if "dataset" in doc:
        print(dataset_line(doc["dataset"]) + "\n")
    print("| Features | Recipe | Dev | Test | Test per-class F1 | Results |\n|---|---|---|---|---|---|")
    for row in doc["figures"]["rows"]:
        per_class = " ".join(pct(v, 0) for v in row["test"]["per_class_f1"].values())
        print(f"| {row['features']} | {row['recipe']} | {split_cell(row['dev'])} | {split_cell(row['test'])} | "
              f"{per_class} | [{row['key']}]({path}) @ {commit} |")
    print("\n| Context | Seeds | Dev W-F1 difference | Test W-F1 difference | Test, per seed | Context kept | Results |"
          "\n|---|---|---|---|---|---|---|")
    for pair in doc["figures"]["paired"]:
        diffs = {split: f"{pct(d['mean'], 2, True)} ± {pct(d['se'], 2)}" for split, d in pair.items()
                 if split in ("dev", "test")}
        per_seed = " ".join(pct(x, 2, True) for x in pair["test"]["weighted_f1_diff"])
        kept = f"{sum(bool(k) for k in pair['context_kept'])} of {len(pair['context_kept'])}"
        print(f"| {pair['recipe']} | {', '.join(map(str, pair['seeds']))} | {diffs['dev']} | {diffs['test']} | "
              f"{per_seed} | {kept} | [{pair['key']}]({path}) @ {commit} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
