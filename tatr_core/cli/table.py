"""``table``: one of the paper's tables (1, 6 or 4) on a zoo, in LaTeX, CSV or Markdown."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..analysis import run as run_analysis
from ..analysis.tables import RENDERERS, TABLES, table_spec
from ..paths import check_output_file, output_errors
from .common import BarProgress, add_executor_options, add_precision_option, open_zoo, write_text


def add_test_time_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-time", action=argparse.BooleanOptionalAction, default=True,
                   help="methods: include the rows that train at test time (AdaMerging, Surgery; minutes per row on a "
                        "CPU the first time); --no-test-time leaves them out")


def add_fixed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fixed", action="store_true",
                   help="methods, sensitivity-variants: every row at its method's own defaults (λ, τ 1%%) instead of "
                        "λ and τ chosen per row on the validation split (the papers' protocol, the default)")


def add_table_options(p: argparse.ArgumentParser) -> None:
    """What ``table`` and ``report`` share: which rows, how λ and τ are set, where points run, the arithmetic."""
    add_test_time_option(p)
    add_fixed_option(p)
    add_executor_options(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="a method table in the paper's layout (LaTeX, CSV or Markdown)")
    p.add_argument("kind", choices=list(TABLES))
    p.add_argument("--zoo", required=True)
    p.add_argument("--format", choices=["latex", "csv", "markdown"], default="markdown")
    p.add_argument("--held-out", nargs="+", default=None, help="generalization: held-out tasks (default: the last two)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None)
    p.add_argument("--out", default=None, metavar="FILE", help="write here instead of printing")
    add_table_options(p)


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out)
    zoo = open_zoo(args.zoo)
    spec = table_spec(zoo, args.kind, test_time=args.test_time, tune=not args.fixed, held_out=args.held_out,
                      split=args.split, sample=args.sample)
    with BarProgress(f"table {args.kind}") as bar:
        table = run_analysis(zoo, spec, progress=bar)
    text = RENDERERS[args.format](table)
    if args.out:
        with output_errors("--out", args.out):
            write_text(Path(args.out), text)
        print(f"{args.kind} table ({args.format}) -> {args.out}")
    else:
        print(text, end="")
    return 0
