"""`hjcag <stage>`: the one entry point that make, dvc.yaml and the KFP components call.

Every command is a thin caller of a function in the package; user mistakes (HjcagError) are printed as one
clear message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hjcag.errors import HjcagError
from hjcag.params import Params, load_params, parse_modalities

log = logging.getLogger("hjcag")

Handler = Callable[[argparse.Namespace], int]


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, args.profile)


def _add_params_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    p.add_argument("--profile", default=None, help="dataset profile in params.yaml (default: the file's `profile:`)")


def cmd_demo_data(args: argparse.Namespace) -> int:
    from hjcag.data.synthetic import write_demo_dataset

    out = write_demo_dataset(Path(args.out), size=args.size, seed=args.seed)
    print(f"synthetic MELD-layout demo dataset written to {out}")
    return 0


def cmd_standin_features(args: argparse.Namespace) -> int:
    from hjcag.data.features_file import save_features
    from hjcag.features.standin import extract_standin_features

    params = _params(args)
    fs = extract_standin_features(Path(args.data), seq_len=params.model.seq_len,
                                  modalities=parse_modalities(args.modalities))
    path = save_features(Path(args.out), fs)
    print(f"stand-in features for {len(fs)} utterances ({fs.dims}) written to {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from hjcag.data.prepare import prepare_dataset

    params = _params(args)
    labels = params.raw.get("datasets", {}).get(args.dataset, {}).get("labels")
    report = prepare_dataset(args.dataset, args.source, args.out, parse_modalities(args.modalities), labels=labels)
    print(report.summary())
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from hjcag.features.extract import extract_features_cli, meta_path

    cache = {} if args.cache is None else {"cache_dir": None if args.cache == "none" else args.cache}
    path = extract_features_cli(args.manifest, args.out, _params(args), args.modalities, **cache)
    print(f"features written to {path} (extraction record: {meta_path(path)})")
    return 0


def _load(args: argparse.Namespace, params: Params):  # type: ignore[no-untyped-def]
    from hjcag.data.features_file import load_features

    return load_features(Path(args.features), seq_len=params.model.seq_len, label_names=params.labels)


def cmd_train(args: argparse.Namespace) -> int:
    from hjcag.train.run import train_and_evaluate

    params = _params(args)
    overrides = {"protocol": args.protocol} if args.protocol else {}
    params = params.with_overrides(model={"name": args.model or params.model.name}, train=overrides)
    fs = _load(args, params)
    modalities = parse_modalities(args.modalities) if args.modalities else fs.modalities
    metrics = train_and_evaluate(fs, params, modalities, params.model.name, Path(args.out))
    _print_summary(metrics, Path(args.out))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from hjcag.train.ablate import run_ablation

    params = _params(args)
    if args.protocol:
        params = params.with_overrides(train={"protocol": args.protocol})
    fs = _load(args, params)
    run_ablation(fs, params, Path(args.out))
    print((Path(args.out) / "ablation.md").read_text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hjcag.demo import run_demo

    return run_demo(Path(args.out), params_path=args.params, profile=args.profile or "demo", size=args.size)


def _print_summary(metrics: dict, out: Path) -> None:
    acc, wf1 = metrics["accuracy"], metrics["weighted_f1"]
    print(
        f"accuracy {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} %, "
        f"weighted F1 {100 * wf1['mean']:.2f} ± {100 * wf1['std']:.2f} % "
        f"over {len(metrics['folds'])} fold(s); metrics: {out / 'metrics.json'}, report: {out / 'report.md'}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hjcag", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole pipeline on generated demo data")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--size", choices=["tiny", "small"], default="tiny")
    _add_params_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-data", help="write the synthetic MELD-layout demo dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--size", choices=["tiny", "small"], default="tiny")
    p.add_argument("--seed", type=int, default=13)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("standin-features", help="simple stand-in features from a MELD-layout dataset")
    p.add_argument("--data", required=True, help="dataset directory in MELD layout")
    p.add_argument("--out", required=True, help="features .npz to write")
    p.add_argument("--modalities", default="t,a,v")
    _add_params_options(p)
    p.set_defaults(func=cmd_standin_features)

    p = sub.add_parser("prepare", help="a dataset as downloaded -> normalised manifest.parquet + report")
    p.add_argument("--dataset", choices=["meld", "iemocap", "manifest"], required=True)
    p.add_argument("--source", required=True, help="dataset root (or the manifest CSV/JSONL file)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--modalities", default="t,a,v", help="media of modalities left out are not required")
    _add_params_options(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("features", help="RoBERTa / openSMILE / ResNet-50 features of a manifest -> .npz")
    p.add_argument("--manifest", required=True, help="manifest.parquet (or CSV) from `hjcag prepare`")
    p.add_argument("--out", required=True, help="features .npz to write")
    p.add_argument("--modalities", default="t,a,v")
    p.add_argument("--cache", default=None, help="feature cache directory, or 'none' (default: params)")
    _add_params_options(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="five-fold (or holdout) training and evaluation on a features file")
    p.add_argument("--features", required=True, help="features .npz (or DialogueRNN-style .pkl)")
    p.add_argument("--protocol", choices=["cv5", "holdout"], default=None, help="default: params train.protocol")
    p.add_argument("--modalities", default=None, help="subset of t,a,v (default: all in the file)")
    p.add_argument("--model", choices=["hjcag", "concat", "late", "mult"], default=None)
    p.add_argument("--out", required=True, help="run directory (re-running resumes it)")
    _add_params_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ablate", help="the paper's Table 4 configurations on the same folds")
    p.add_argument("--features", required=True)
    p.add_argument("--protocol", choices=["cv5", "holdout"], default=None)
    p.add_argument("--out", required=True)
    _add_params_options(p)
    p.set_defaults(func=cmd_ablate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.func
    try:
        return handler(args)
    except HjcagError as exc:
        print(f"hjcag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hjcag {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

