"""`hjcag demo`: the whole pipeline on generated data, end to end, in a few minutes on a laptop CPU.

generate demo data -> features -> five-fold training of HJCAG, the Table 4 ablations and the baselines on the
same folds -> reports. Every step skips work already done in `out`, so an interrupted demo resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

from hjcag import stages
from hjcag.artifacts import FEATURES_FILE, METRICS_FILE, read_json
from hjcag.model_catalog import BASELINES
from hjcag.params import load_params


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def comparison_table(ablation: dict, baselines: dict[str, dict]) -> str:
    """Markdown table: HJCAG and the baselines on the same folds (Acc / W-F1 / macro F1, mean ± std in %)."""

    def cell(metric: dict) -> str:
        return f"{100 * metric['mean']:.2f} ± {100 * metric['std']:.2f}"

    lines = ["| Model | Acc (%) | W-F1 (%) | macro F1 (%) |", "|---|---|---|---|"]
    rows = [("HJCAG (t+a+v)", ablation)] + [(f"{name} baseline (t+a+v)", m) for name, m in baselines.items()]
    for name, metrics in rows:
        lines.append(f"| {name} | {cell(metrics['accuracy'])} | {cell(metrics['weighted_f1'])} | "
                     f"{cell(metrics['macro_f1'])} |")
    return "\n".join(lines) + "\n"


def run_demo(out: Path, params_path: str | Path = "params.yaml", profile: str = "demo", size: str = "tiny") -> int:
    started = time.perf_counter()
    params = load_params(params_path, profile)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, features = out / "data", out / FEATURES_FILE

    t0 = _step(f"1/4 demo data ({size}) -> {data_dir}")
    if not (data_dir / "train_sent_emo.csv").exists():
        stages.demo_data(data_dir, size=size, seed=params.seed)
    print(f"   done in {time.perf_counter() - t0:.1f} s")

    t0 = _step("2/4 features")
    if not features.exists():
        print("NOTE: the demo uses simple stand-in features computed from the generated signals (hashed bag of "
              "words, frame-level audio descriptors, down-sampled grey frames), not RoBERTa / openSMILE / ResNet-50.")
        stages.standin_features(data_dir, features, params)
    fs = stages.load_features(features, params)
    print(f"   {len(fs)} utterances, dims {fs.dims}, in {time.perf_counter() - t0:.1f} s")

    t0 = _step("3/4 five-fold HJCAG and the Table 4 ablations")
    ablation = stages.ablate(features, out / "ablation", params)
    print(f"   done in {time.perf_counter() - t0:.1f} s")

    t0 = _step("4/4 baselines on the same folds")
    baselines = {name: stages.train(features, out / "baselines" / name, params.with_overrides(model={"name": name}))
                 for name in BASELINES}
    print(f"   done in {time.perf_counter() - t0:.1f} s")

    full = read_json(out / "ablation" / "full" / METRICS_FILE)
    table = comparison_table(full, baselines)
    (out / "comparison.md").write_text(table)
    print("\n" + (out / "ablation" / "ablation.md").read_text())
    print(table)
    rows = {r["slug"]: r for r in ablation["rows"]}
    best_single = max((rows[m] for m in ("t", "a", "v") if m in rows), key=lambda r: r["accuracy"]["mean"])
    verdict = "beats" if full["accuracy"]["mean"] > best_single["accuracy"]["mean"] else "does NOT beat"
    print(
        f"Fusion (t+a+v) {verdict} the best single modality ({best_single['label']}): "
        f"{100 * full['accuracy']['mean']:.1f}% vs {100 * best_single['accuracy']['mean']:.1f}% accuracy."
    )
    print(f"Report: {out / 'ablation' / 'full' / 'report.md'}; total {time.perf_counter() - started:.0f} s")
    return 0
