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


def run(args: argparse.Namespace) -> int:
    from hadskip.errors import ConfigError
    from hadskip.run.routes import checkpoint_routes
    from hadskip.tables import Column, text_table

    if args.top < 1:
        raise ConfigError(f"--top {args.top} must be at least 1")
    s, info = checkpoint_routes(args.checkpoint, args.task, data_dir=args.data_dir, threshold=args.threshold)
    budget = "" if info["budget"] is None else f", trained for budget {info['budget']:g}"
    print(
        f"{info['method']} on {info['task']} dev ({s.rows} rows{budget}), threshold {info['threshold']:.4g}: "
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
    return 0
