"""Print README "Real data" table rows from a real_meld_text results file, figures rounded as the README prints them.

    python benchmarks/results_table.py benchmarks/results/real_meld_text-20261206T050641Z.json

Two tables: one row per recipe (dev and test accuracy / weighted F1 ± its spread over seeds / macro F1, test per-class
F1), and one row per context recipe against ``meld`` on the same seeds (mean ± standard error of the weighted F1
differences, each seed's test difference, in how many seeds the context was kept). The last column names the file
and the commit that ran it; tests/test_readme_results.py checks the README's rows against the file. Recipe names are
printed as keys: the README words them.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results file of benchmarks/real_meld_text.py")
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    path = args.results.resolve().relative_to(REPO) if args.results.resolve().is_relative_to(REPO) else args.results
    commit = doc["git"]["commit"][:7] + (" (dirty)" if doc["git"]["dirty"] else "")
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
