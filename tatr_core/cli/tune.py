"""``tune``: a method's λ (and TATR's τ) chosen on the validation split, then its test accuracy there."""
from __future__ import annotations

import argparse

from ..analysis.tuning import tunable, tune
from ..errors import TatrError
from ..merge import REGISTRY
from ..runs import evaluate_method, method_params
from ..trust_region import SENSITIVITIES, check_tau
from .common import (BarProgress, add_executor_options, add_parameter_flags, add_plugin_flags, add_precision_option,
                     method_kwargs, open_zoo, print_json, seed_value)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="choose a method's λ (and TATR's τ) on the validation split, then report test "
                                    "accuracy at the chosen values")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", required=True, choices=list(REGISTRY))
    p.add_argument("--tau", type=float, default=None,
                   help="TATR plug-in on (τ > 0: τ is chosen too) or off (0); default: the method's")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None, help="exemplars per task for the gradients (default 128)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--sample", type=int, default=None, help="evaluate on a fixed seeded subsample of this size per task")
    p.add_argument("--lam-grid", type=float, nargs="+", default=None, metavar="L", help="λ values (default 0.1 … 1.0)")
    p.add_argument("--tau-grid", type=float, nargs="+", default=None, metavar="T",
                   help="τ values, fractions (default 0.001 0.002 0.005 0.01 0.02 0.05)")
    add_parameter_flags(p, REGISTRY.values())
    add_plugin_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_executor_options(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    own = method_kwargs(args)
    given = {k: v for k, v in {"tau": args.tau, "sensitivity": args.sensitivity, "exemplars": args.exemplars}.items()
             if v is not None}
    method_params(args.method, seed=args.seed, **given, **own)  # fail fast on bad options, before loading the zoo
    for value in args.tau_grid or []:
        check_tau(value)
    if not tunable(args.method, {**given, **own}):
        raise TatrError(f"'{args.method}' has nothing to choose on validation here: no λ, and no TATR τ to choose "
                        "(use a training-free method, or --tau > 0 with a non-negative sensitivity)")
    zoo = open_zoo(args.zoo)
    bar = BarProgress(f"tune {args.method}")
    try:
        tuned = tune(zoo, args.method, sample=args.sample, progress=bar, lam_grid=args.lam_grid,
                     tau_grid=args.tau_grid, seed=args.seed, **given, **own)
        test = evaluate_method(zoo, args.method, sample=args.sample, seed=args.seed, progress=bar,
                               **{**given, **own, **tuned["chosen"]})
    finally:
        bar.close()
    if args.json:
        print_json({**tuned, "test": {k: test[k] for k in ("params", "tasks", "average_accuracy")}})
        return 0
    chosen = ", ".join(f"{k} = {v:g}" for k, v in tuned["chosen"].items())
    print(f"{args.method} on zoo {zoo.name}: chosen on val {chosen} ({len(tuned['trace'])} points, "
          f"val accuracy {100 * tuned['val_accuracy']:.1f}%)")
    print(f"test accuracy at the chosen values: {100 * test['average_accuracy']:.1f}%")
    return 0
