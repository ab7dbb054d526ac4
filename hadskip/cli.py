"""`hadskip ...` commands. User errors print as one line (exit 2); --debug shows the traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from hadskip.errors import ConfigError, HadSkipError

log = logging.getLogger("hadskip")

# subcommand name -> (add_arguments, run); other modules register theirs here
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}


def command(name: str, help: str):
    def register(add_arguments: Callable[[argparse.ArgumentParser], None]):
        def bind(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = (help, add_arguments, run)
            return run

        return bind

    return register


def parse_budgets(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--budgets {text!r} must be a comma list of layer counts, e.g. 4.5,3,1.5"
        ) from None
    if not values:
        raise ConfigError("--budgets is empty; give a comma list of layer counts, e.g. 4.5,3,1.5")
    return values


# -- train -----------------------------------------------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli"
    )
    p.add_argument("--model", help="HF hub id, local model folder, or minilm-l6 (default)")
    p.add_argument("--method", help="hadskip (default), or an early-exit baseline: static, entropy, pabee, "
                   "berxit, leebert")  # fmt: skip
    p.add_argument("--budgets", help="expected executed layers, comma list (default 4.5,3,1.5)")
    p.add_argument("--output", required=True, help="output folder or URI (s3://..., gs://...)")
    p.add_argument("--data-dir", help="GLUE-layout folder (TSV or Parquet); default: the hub's nyu-mll/glue")
    p.add_argument("--config", help="JSON or YAML settings file (see hadskip.config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set stage3.beta=2.0 (repeatable)")  # fmt: skip
    p.add_argument("--cache-dir", help="stage I cache (default $HADSKIP_CACHE or ~/.cache/hadskip)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --output")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--no-checkpoints", action="store_true", help="do not save a model per budget")


def settings_from_args(args: argparse.Namespace):
    from hadskip.config import build_settings, load_settings_file

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


@command(
    "train", "run the three HadSkip stages (or an early-exit baseline) on one task and evaluate every budget"
)(_train_args)
def _train(args: argparse.Namespace) -> int:
    from hadskip.pipeline import train_run

    if args.overwrite and args.resume:
        raise ConfigError("--overwrite and --resume contradict each other; pass one")
    settings = settings_from_args(args)
    rows = train_run(
        settings,
        args.output,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        resume=args.resume,
        save_checkpoints=not args.no_checkpoints,
    )
    print(format_rows(rows))
    print(f"results: {os.path.join(args.output, 'results.parquet')}")
    return 0


def format_rows(rows) -> str:
    lines = [f"{'method':<8} {'budget':>6} {'metric':>16} {'mean layers':>11} {'train s':>8}"]
    for r in rows:
        metric = f"{r.metric_name} {r.metric:.4f}" if r.metric is not None else "-"
        lines.append(
            f"{r.method:<8} {r.budget:>6g} {metric:>16} {r.mean_layers:>11.2f} {r.train_seconds or 0:>8.0f}"
        )
    return "\n".join(lines)


# -- predict ---------------------------------------------------------------------------------------------


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder written by hadskip train")
    p.add_argument("text", nargs="+", help="sentences; with --pair, the first sentence of each pair")
    p.add_argument("--pair", action="append", help="second sentence (repeat once per text)")


@command("predict", "predict on raw text with a saved gated model")(_predict_args)
def _predict(args: argparse.Namespace) -> int:
    from hadskip.model import load

    if args.pair is not None and len(args.pair) != len(args.text):
        raise ConfigError(f"got {len(args.text)} texts but {len(args.pair)} --pair values; give one per text")
    model = load(args.checkpoint)
    out = model.predict(args.text, args.pair)
    for text, pred, layers in zip(args.text, out["prediction"], out["layers"], strict=True):
        print(json.dumps({"text": text, "prediction": pred, "layers": layers}))
    return 0


# -- entry point -----------------------------------------------------------------------------------------


def _load_plugins() -> None:
    """Import modules that register further subcommands (results, bench-speed, ...) when present."""
    import importlib

    for name in ("hadskip.report", "hadskip.speed"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="hadskip", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import transformers

    transformers.logging.set_verbosity_error()  # load reports for the new classifier head are expected
    transformers.logging.disable_progress_bar()
    try:
        return COMMANDS[args.command][2](args)
    except HadSkipError as err:
        if args.debug:
            raise
        print(f"hadskip: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hadskip: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
