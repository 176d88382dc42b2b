"""``eval``: accuracy and loss per task of a method (or a baseline) on a zoo."""
from __future__ import annotations

import argparse
import contextlib

from .. import options
from ..cache import recompute
from ..errors import TatrError
from ..merge import REGISTRY
from ..runs import EVAL_METHODS, evaluate_method, method_params
from ..trust_region import SENSITIVITIES
from .common import (BarProgress, add_parameter_flags, add_plugin_flags, add_precision_option, method_kwargs,
                     open_zoo, print_json, seed_value)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy and loss per task of a method on a zoo")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", required=True, choices=list(EVAL_METHODS))
    p.add_argument("--tau", type=float, default=None, help="TATR plug-in: fraction of dimensions excluded (0 = off)")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None,
                   help="exemplars per task for the gradients, Fisher and RegMean (default 128)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the exemplars, the training batches and --sample")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None, help="evaluate on a fixed seeded subsample of this size per task")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks")
    add_parameter_flags(p, REGISTRY.values())
    add_plugin_flags(p)
    p.add_argument("--no-cache", action="store_true", help="recompute everything the result depends on (gradients, fits, a manifest zoo's task-vector "
                        "file), even when cached; the zoo's images are inputs and are kept")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    own = method_kwargs(args)
    method_params(args.method, tau=args.tau, sensitivity=args.sensitivity, exemplars=args.exemplars, seed=args.seed,
                  **own)  # fail fast on bad options, before loading the zoo
    if args.exemplars is not None and args.exemplars <= 0:
        raise TatrError(f"--exemplars must be at least 1, got {args.exemplars}")
    with recompute() if args.no_cache else contextlib.nullcontext():  # --no-cache: the task-vector file too
        zoo = open_zoo(args.zoo)
    bar = BarProgress(f"eval {args.method}")
    try:
        record = evaluate_method(zoo, args.method, tau=args.tau, sensitivity=args.sensitivity,
                                 exemplars=args.exemplars, seed=args.seed, split=args.split, sample=args.sample,
                                 tasks=args.tasks, progress=bar, use_cache=not args.no_cache, **own)
    finally:
        bar.close()
    if args.json:
        print_json({k: record[k] for k in ("method", "params", "tasks", "average_accuracy")}
                   | {k: record[k] for k in ("split", "sample", "zoo", "excluded", "N", "learned", "surgery")
                      if k in record} | {"precision": options.current().precision})
        return 0
    shown = " ".join(f"{k}={v}" for k, v in record["params"].items())
    print(f"{args.method} on zoo {zoo.name} ({args.split} split{', sample ' + str(args.sample) if args.sample else ''}) {shown}")
    print(f"{'task':14s}{'accuracy':>10s}{'loss':>9s}{'n':>7s}")
    for task, r in record["tasks"].items():
        print(f"{task:14s}{100 * r['accuracy']:9.1f}%{r['loss']:9.3f}{r['n']:7d}")
    print(f"{'average':14s}{100 * record['average_accuracy']:9.1f}%")
    if "excluded" in record:
        print(f"excluded from the trust region: {record['excluded']:,} of {record['N']:,} dimensions")
    if "learned" in record:
        coef = [c for row in record["learned"]["coefficients"] for c in row]
        ent = record["learned"]["entropy"]
        print(f"learned {len(coef)} coefficients ({record['learned']['granularity']}-wise): mean {sum(coef) / len(coef):.3f}, "
              f"range [{min(coef):.3f}, {max(coef):.3f}]; entropy {ent[0]:.3f} → {ent[-1]:.3f}")
    if "surgery" in record:
        before, after = record["surgery"]["l1_before"], record["surgery"]["l1_after"]
        print("surgery L1 gap to the individual models: " + ", ".join(
            f"{t} {before[t]:.3f}→{after[t]:.3f}" for t in before))
    return 0
