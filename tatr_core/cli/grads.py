"""``grads``: per-task E|∇L_k| and E∇L_k at θ_pre, as files for ``merge --grads``."""
from __future__ import annotations

import argparse

from ..errors import TatrError
from ..gradients import compute_task_gradients, write_gradient_files
from ..paths import check_output_dir, check_space, output_errors
from .common import BarProgress, open_zoo, seed_value


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grads", help="per-task E|∇L_k| and E∇L_k at θ_pre, as files for merge --grads")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--exemplars", type=int, default=128, help="training images per task (default 128)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <task>.grads.safetensors and <task>.signed_grads.safetensors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.exemplars <= 0:
        raise TatrError(f"--exemplars must be at least 1, got {args.exemplars}")
    check_output_dir(args.out)
    zoo = open_zoo(args.zoo)
    bar = BarProgress("gradients")
    try:
        grads = compute_task_gradients(zoo, args.exemplars, args.seed, progress=bar)
    finally:
        bar.close()
    needed = 2 * grads.abs_mean.numel() * grads.abs_mean.element_size()
    check_space(args.out, needed, f"--out {args.out}: the {2 * len(zoo.tasks)} gradient files",
                "choose a folder with room")
    with output_errors("--out", args.out, needed):
        files = write_gradient_files(zoo, grads, args.out)
    print(f"wrote {len(files)} files for {len(zoo.tasks)} tasks ({args.exemplars} exemplars each, seed {args.seed}) to {args.out}")
    return 0
