"""`hadskip routes`: is a checkpoint's routing adaptive? Its routes and depths on dev, one table each."""

from __future__ import annotations

import argparse

HELP = "show which layers a checkpoint runs per dev sequence: routes, depths, and who gets the deep ones"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a HadSkip or early-exit checkpoint folder")
    p.add_argument("--task", required=True, help="GLUE task whose dev split to route")
    p.add_argument("--data-dir", help="GLUE-layout folder; default: the checkpoint run's, else the hub")
    p.add_argument("--threshold", type=float, help="inference threshold (default: the checkpoint's own)")
    p.add_argument("--top", type=int, default=5, help="routes to list (default 5)")
    p.add_argument(
        "--shuffles",
        type=int,
        default=0,
        help="also score the same routes shuffled across the dev rows this many times (HadSkip; default 0: off)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles (default 0)")


def run(args: argparse.Namespace) -> int:
    from hadskip.errors import ConfigError
    from hadskip.run.routes import checkpoint_routes
    from hadskip.tables import Column, text_table

    if args.top < 1:
        raise ConfigError(f"--top {args.top} must be at least 1")
    report = checkpoint_routes(
        args.checkpoint,
        args.task,
        data_dir=args.data_dir,
        threshold=args.threshold,
        shuffles=args.shuffles,
        seed=args.seed,
    )
    s = report.summary
    budget = "" if report.budget is None else f", trained for budget {report.budget:g}"
    print(
        f"{report.method} on {report.task} dev ({s.rows} rows{budget}), threshold {report.threshold:.4g}: "
        f"{s.mean_layers:.2f} ± {s.sd_layers:.2f} layers per sequence"
    )
    print("layer usage: " + "  ".join(f"{i + 1}: {u:.0%}" for i, u in enumerate(s.layer_usage)))
    print(f"{s.distinct} distinct routes; the most common:")
    print(
        text_table(
            [{"route": name, "share": share} for name, share in s.routes[: args.top]],
            [Column("route", "route (layers run)", align="<"), Column("share", "rows", ".1%")],
        )
    )
    label = "" if s.common_label is None else f" (label {s.common_label}: the most common gold label)"
    print(f"by depth{label}:")
    regression = s.common_label is None
    columns = [Column("layers", "layers"), Column("rows", "rows"), Column("share", "share", ".1%")]
    if regression:
        columns.append(Column("abs_error", "mean |error|", ".3f"))
    else:
        columns += [
            Column("accuracy", "accuracy", ".3f"),
            Column("gold_common", f"gold {s.common_label}", ".1%"),
            Column("pred_common", f"predicted {s.common_label}", ".1%"),
        ]
    print(text_table(s.groups, columns))
    if s.static:
        print(
            f"one route serves {s.routes[0][1]:.0%} of the rows: this routing is effectively a fixed layer "
            "subset, not adaptive"
        )
    if report.shuffle is not None:
        _print_shuffle(report.shuffle, args.seed)
    return 0


def _print_shuffle(t, seed: int) -> None:
    n = len(t.shuffled)
    print(
        f"{t.metric} on its own routes {t.own:.4f}; the same routes shuffled across the rows ({n} shuffles, seed "
        f"{seed}): {t.mean:.4f} ± {t.sd:.4f}, at or above its own in {t.at_least_own} of {n} (p = {t.p_value:.3f})"
    )
    if n < 19:
        verdict = "19 or more shuffles can show a difference at p < 0.05"
    elif t.p_value < 0.05:
        verdict = "which input gets which route earns its keep here"
    else:
        verdict = "routes handed out at random score as well: the routing chose layers more than inputs"
    print(f"own - shuffled: {t.own - t.mean:+.4f}; {verdict}")
