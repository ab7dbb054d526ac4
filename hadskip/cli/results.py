"""`hadskip results summary|query|report`."""

from __future__ import annotations

import argparse

from hadskip.errors import ConfigError

HELP = "summarise, query and report results (Parquet)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="results_command", required=True)
    s = sub.add_parser("summary", help="best point per task and budget (the paper's Table 1)")
    s.add_argument("path", help="results file or folder (local or URI)")
    s.add_argument("--tolerance", type=float, default=0.25, help="valid: mean layers <= budget + this")
    s.add_argument("--retention", action="store_true", help="cells as a fraction of the full model")
    s.add_argument("--sweep", help="only this sweep_id")
    s.add_argument(
        "--search-best",
        action="store_true",
        help="cells as the best search trial's own metric, even where confirmation seeds exist",
    )
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q = sub.add_parser("query", help="SQL (DuckDB) over the results as table `results`")
    q.add_argument("path")
    q.add_argument("sql")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    r = sub.add_parser("report", help="Markdown report with PNG plots")
    r.add_argument("path")
    r.add_argument("--out", required=True, help="folder for report.md and the PNGs")
    r.add_argument("--tolerance", type=float, default=0.25)


def run(args: argparse.Namespace) -> int:
    from hadskip.results import format_summary, query, render, report, summary

    if getattr(args, "tolerance", 0) < 0:
        raise ConfigError(f"--tolerance {args.tolerance} must be >= 0 (layers over the budget allowed)")
    if args.results_command == "summary":
        table, details = summary(
            args.path,
            tolerance=args.tolerance,
            retention=args.retention,
            sweep_id=args.sweep,
            search_best=args.search_best,
        )
        if args.format == "table":
            print(format_summary(table, details, retention=args.retention, tolerance=args.tolerance))
        else:
            print(render(table.reset_index(), args.format))
    elif args.results_command == "query":
        print(render(query(args.path, args.sql), args.format))
    else:
        print(f"report: {report(args.path, args.out, tolerance=args.tolerance)}")
    return 0
