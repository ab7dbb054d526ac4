"""`hadskip train` and `hadskip predict`."""

from __future__ import annotations

import argparse
import json
import os

from hadskip.cli.args import parse_budgets
from hadskip.config import RunSettings, build_settings, load_settings_file
from hadskip.errors import ConfigError
from hadskip.tables import Column, text_table

TRAIN_HELP = "run the three HadSkip stages (or an early-exit baseline) on one task and evaluate every budget"
PREDICT_HELP = "predict on raw text with a saved model"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli"
    )
    p.add_argument("--model", help="HF hub id, local model folder, or minilm-l6 (default)")
    p.add_argument(
        "--method",
        help="hadskip (default), or an early-exit baseline: static, entropy, pabee, berxit, leebert",
    )
    p.add_argument("--budgets", help="expected executed layers, comma list (default 4.5,3,1.5)")
    p.add_argument("--output", required=True, help="output folder or URI (s3://..., gs://...)")
    p.add_argument("--data-dir", help="GLUE-layout folder (TSV or Parquet); default: the hub's nyu-mll/glue")
    p.add_argument("--config", help="JSON or YAML settings file (see hadskip.config)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set stage3.beta=2.0 (repeatable)",
    )
    p.add_argument("--cache-dir", help="stage I cache (default $HADSKIP_CACHE or ~/.cache/hadskip)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --output")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--no-checkpoints", action="store_true", help="do not save a model per budget")


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    base = load_settings_file(args.config) if args.config else {}
    flags = [f"data.task={json.dumps(args.task)}"]
    if args.model:
        flags.append(f"model.name_or_path={json.dumps(args.model)}")
    if args.data_dir:
        flags.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if getattr(args, "method", None):
        flags.append(f"method={json.dumps(args.method)}")
    if args.budgets:
        flags.append(f"budgets={json.dumps(parse_budgets(args.budgets))}")
    return build_settings(base, flags + list(args.overrides))


def format_rows(rows) -> str:
    records = [
        {
            "method": r.method,
            "budget": f"{r.budget:g}",
            "metric": f"{r.metric_name} {r.metric:.4f}" if r.metric is not None else "-",
            "mean layers": f"{r.mean_layers:.2f}" if r.mean_layers is not None else "-",
            "train s": f"{r.train_seconds or 0:.0f}",
        }
        for r in rows
    ]
    return text_table(records, [Column("method", align="<"), *(Column(k) for k in list(records[0])[1:])])


def run_train(args: argparse.Namespace) -> int:
    from hadskip.run.train import train_run

    if args.overwrite and args.resume:
        raise ConfigError("--overwrite and --resume contradict each other; pass one")
    rows = train_run(
        settings_from_args(args),
        args.output,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        resume=args.resume,
        save_checkpoints=not args.no_checkpoints,
    )
    print(format_rows(rows))
    print(f"results: {os.path.join(args.output, 'results.parquet')}")
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder written by hadskip train")
    p.add_argument("text", nargs="+", help="sentences; with --pair, the first sentence of each pair")
    p.add_argument("--pair", action="append", help="second sentence (repeat once per text)")


def run_predict(args: argparse.Namespace) -> int:
    from hadskip.checkpoint import load

    if args.pair is not None and len(args.pair) != len(args.text):
        raise ConfigError(f"got {len(args.text)} texts but {len(args.pair)} --pair values; give one per text")
    model = load(args.checkpoint)
    out = model.predict(args.text, args.pair)
    for text, pred, layers in zip(args.text, out["prediction"], out["layers"], strict=True):
        print(json.dumps({"text": text, "prediction": pred, "layers": layers}))
    return 0
