"""`hadskip ...` commands. User errors print as one line (exit 2); --debug shows the traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from hadskip.cli import curve as curve_cli
from hadskip.cli import results as results_cli
from hadskip.cli import routes as routes_cli
from hadskip.cli import speed as speed_cli
from hadskip.cli import train as train_cli
from hadskip.errors import HadSkipError


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "train": Command(train_cli.TRAIN_HELP, train_cli.add_train_arguments, train_cli.run_train),
    "predict": Command(train_cli.PREDICT_HELP, train_cli.add_predict_arguments, train_cli.run_predict),
    "results": Command(results_cli.HELP, results_cli.add_arguments, results_cli.run),
    "bench-speed": Command(speed_cli.HELP, speed_cli.add_arguments, speed_cli.run),
    "curve": Command(curve_cli.HELP, curve_cli.add_arguments, curve_cli.run),
    "routes": Command(routes_cli.HELP, routes_cli.add_arguments, routes_cli.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hadskip", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()  # load reports for the new classifier head are expected
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_transformers()
    try:
        return COMMANDS[args.command].run(args)
    except HadSkipError as err:
        if args.debug:
            raise
        print(f"hadskip: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hadskip: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
