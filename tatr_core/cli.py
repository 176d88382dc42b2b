"""``python -m tatr_core``: the command line.

Every user error (bad file, bad option value, missing gradients) is printed as one line
``error: ...`` on stderr with exit code 2; argparse's own usage errors also exit with 2.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from .errors import TatrError


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


# ---------------------------------------------------------------------------- merge
def _add_merge(sub: argparse._SubParsersAction) -> None:
    from .merge import REGISTRY
    from .trust_region import SENSITIVITIES

    p = sub.add_parser(
        "merge",
        help="merge fine-tuned checkpoints into one (safetensors)",
        description="Merge K fine-tuned image encoders with one method of the registry, optionally inside "
                    "the TATR trust region, and write the merged image encoder as safetensors. Checkpoints "
                    "may be safetensors, torch state dicts, task_vectors-style pickled ImageEncoders or "
                    "Hugging Face CLIP weights.",
    )
    p.add_argument("--pretrained", required=True, metavar="PRE", help="the pretrained image encoder θ_pre")
    p.add_argument("--finetuned", required=True, nargs="+", metavar="FT", help="fine-tuned image encoders θ_1..θ_K")
    p.add_argument("--method", required=True, choices=list(REGISTRY), help="merge method")
    p.add_argument("--lam", type=float, default=None,
                   help="scaling λ of the merged task vector (default 0.3; 1.0 for tsv; not for average)")
    p.add_argument("--density", type=float, default=None, help="ties: fraction of each task vector kept (default 0.2)")
    p.add_argument("--tau", type=float, default=None,
                   help="fraction of dimensions excluded from the trust region (default 0.01 for tatr, 0 = off for the others)")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None,
                   help="sensitivity Ω of the trust region (default gradient)")
    p.add_argument("--grads", nargs="+", metavar="G", default=None,
                   help="per-task E|∇L_k| files (same keys as the model), one per fine-tuned model, same order")
    p.add_argument("--signed-grads", nargs="+", metavar="S", default=None,
                   help="per-task E∇L_k files, for --sensitivity positive/negative")
    p.add_argument("--out", required=True, metavar="MERGED.safetensors", help="where to write the merged encoder")
    p.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .checkpoints import load_image_encoder, save_safetensors
    from .merge import merge, resolve_params
    from .trust_region import SENSITIVITIES

    start = time.perf_counter()
    params = resolve_params(args.method, lam=args.lam, density=args.density, tau=args.tau, sensitivity=args.sensitivity)
    needs = SENSITIVITIES[params["sensitivity"]].needs if params["tau"] > 0 else ""
    if needs == "grads" and not args.grads:
        raise TatrError(f"--method {args.method} with τ > 0 and sensitivity '{params['sensitivity']}' needs --grads "
                        "(E|∇L_k| per fine-tuned model, from 'python -m tatr_core grads'), or use --sensitivity zero-shot")
    if needs == "signed_grads" and not args.signed_grads:
        raise TatrError(f"sensitivity '{params['sensitivity']}' needs --signed-grads (E∇L_k per fine-tuned model)")
    for flag, files in (("--grads", args.grads), ("--signed-grads", args.signed_grads)):
        if files and len(files) != len(args.finetuned):
            raise TatrError(f"{flag}: {len(files)} files for {len(args.finetuned)} fine-tuned models; give one per model, same order")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise TatrError(f"--out {out}: the merged model is written as safetensors; name it *.safetensors")
    if out.exists() and out.is_dir():
        raise TatrError(f"--out {out} is a folder; give a file name ending in .safetensors")

    from .vectors import TaskVectors

    tv = TaskVectors.from_files(args.pretrained, args.finetuned)
    aux = {}
    for name, files in (("grads", args.grads), ("signed_grads", args.signed_grads)):
        if files and needs == name:
            aux[name] = tv.flatten_aux([load_image_encoder(f) for f in files], files, name.replace("_", " "))
    result = merge(tv, args.method, lam=params.get("lam"), density=params.get("density"), tau=params["tau"],
                   sensitivity=params.get("sensitivity"), **aux)
    recipe = {
        "method": args.method,
        "params": result.params,
        "pretrained": str(args.pretrained),
        "finetuned": [str(f) for f in args.finetuned],
        "excluded": result.excluded,
        "tool": "tatr_core merge",
    }
    save_safetensors(tv.to_state_dict(result.theta), out, metadata={"tatr_recipe": json.dumps(recipe)})
    pct = 100.0 * result.excluded / tv.N
    shown = " ".join(f"{k}={v}" for k, v in result.params.items())
    print(f"{args.method}: K={tv.K} N={tv.N:,} excluded={result.excluded:,} ({pct:.2f}%) {shown} "
          f"time={time.perf_counter() - start:.1f}s peak_rss={_peak_rss_gib():.1f}GiB -> {out}")
    return 0


# ---------------------------------------------------------------------------- progress
class BarProgress:
    """A tqdm bar on stderr driven by ``progress(fraction, message)`` callbacks."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, mininterval=0.5,
                        bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {elapsed} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        self.bar.set_postfix_str(message[:70], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _load_zoo(spec: str):
    from .zoo import load_zoo

    bar = BarProgress(f"zoo {spec}")
    try:
        return load_zoo(spec, bar)
    finally:
        bar.close()


# ---------------------------------------------------------------------------- zoo
def _add_zoo(sub: argparse._SubParsersAction) -> None:
    from .zoo.mini import PRESETS

    p = sub.add_parser("zoo", help="build or describe a zoo")
    zsub = p.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    b = zsub.add_parser("build", help="build a built-in zoo (cached under cache/zoos/)")
    b.add_argument("--preset", choices=list(PRESETS), default="mini")
    b.set_defaults(func=_cmd_zoo_build)
    i = zsub.add_parser("info", help="tasks, classes, split sizes and reference accuracies of a zoo")
    i.add_argument("--zoo", default="mini", help="mini, micro or a manifest path")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=_cmd_zoo_info)


def _cmd_zoo_build(args: argparse.Namespace) -> int:
    zoo = _load_zoo(args.preset)
    print(f"zoo {zoo.name}: {len(zoo.tasks)} tasks, built in {zoo.info.get('build_seconds', '?')} s, at {zoo.info['folder']}")
    return 0


def _zoo_summary(zoo) -> dict:
    return {
        "name": zoo.name, "arch": zoo.arch, "key": zoo.key, "image_size": zoo.image_size,
        "parameters": zoo.task_vectors.N,
        "tasks": {
            t.name: {"classes": t.classnames, "source": t.source,
                     "sizes": {s: int(v[1].numel()) for s, v in t.splits.items()},
                     **zoo.info.get("reference_test_accuracy", {}).get(t.name, {})}
            for t in zoo.tasks.values()
        },
        "build_seconds": zoo.info.get("build_seconds"), "folder": zoo.info.get("folder"),
    }


def _cmd_zoo_info(args: argparse.Namespace) -> int:
    summary = _zoo_summary(_load_zoo(args.zoo))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"zoo {summary['name']}  architecture {summary['arch']}  {summary['image_size']}px  "
          f"{summary['parameters']:,} image-encoder parameters")
    print(f"{'task':14s}{'classes':>8s}{'train':>7s}{'val':>6s}{'test':>6s}{'zero-shot':>11s}{'fine-tuned':>12s}  source")
    for name, t in summary["tasks"].items():
        zs = f"{100 * t['zero_shot']:.1f}%" if "zero_shot" in t else "-"
        ind = f"{100 * t['individual']:.1f}%" if "individual" in t else "-"
        sz = t["sizes"]
        print(f"{name:14s}{len(t['classes']):8d}{sz.get('train', 0):7d}{sz.get('val', 0):6d}{sz.get('test', 0):6d}"
              f"{zs:>11s}{ind:>12s}  {t['source']}")
    if summary["folder"]:
        print(f"cached at {summary['folder']}" + (f" (built in {summary['build_seconds']} s)" if summary["build_seconds"] else ""))
    return 0


# ---------------------------------------------------------------------------- grads
def _add_grads(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grads", help="per-task E|∇L_k| and E∇L_k at θ_pre, as files for merge --grads")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--exemplars", type=int, default=128, help="training images per task (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <task>.grads.safetensors and <task>.signed_grads.safetensors")
    p.set_defaults(func=_cmd_grads)


def _cmd_grads(args: argparse.Namespace) -> int:
    from .gradients import compute_task_gradients, write_gradient_files

    zoo = _load_zoo(args.zoo)
    bar = BarProgress("gradients")
    try:
        grads = compute_task_gradients(zoo, args.exemplars, args.seed, progress=bar)
    finally:
        bar.close()
    files = write_gradient_files(zoo, grads, args.out)
    print(f"wrote {len(files)} files for {len(zoo.tasks)} tasks ({args.exemplars} exemplars each, seed {args.seed}) to {args.out}")
    return 0


# ---------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .runs import EVAL_METHODS
    from .trust_region import SENSITIVITIES

    p = sub.add_parser("eval", help="accuracy and loss per task of a method on a zoo")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", required=True, choices=list(EVAL_METHODS))
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--density", type=float, default=None)
    p.add_argument("--tau", type=float, default=None)
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None, help="exemplars per task for the gradients (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the exemplars and of --sample")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None, help="evaluate on a fixed seeded subsample of this size per task")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks")
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .runs import evaluate_method, method_params

    method_params(args.method, lam=args.lam, density=args.density, tau=args.tau, sensitivity=args.sensitivity,
                  exemplars=args.exemplars, seed=args.seed)  # fail fast on bad options, before loading the zoo
    if args.exemplars is not None and args.exemplars <= 0:
        raise TatrError(f"--exemplars must be at least 1, got {args.exemplars}")
    zoo = _load_zoo(args.zoo)
    bar = BarProgress(f"eval {args.method}")
    try:
        record = evaluate_method(zoo, args.method, lam=args.lam, density=args.density, tau=args.tau,
                                 sensitivity=args.sensitivity, exemplars=args.exemplars, seed=args.seed,
                                 split=args.split, sample=args.sample, tasks=args.tasks, progress=bar,
                                 use_cache=not args.no_cache)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({k: record[k] for k in ("method", "params", "tasks", "average_accuracy")}
                         | {k: record[k] for k in ("split", "sample", "zoo", "excluded", "N") if k in record}))
        return 0
    shown = " ".join(f"{k}={v}" for k, v in record["params"].items())
    print(f"{args.method} on zoo {zoo.name} ({args.split} split{', sample ' + str(args.sample) if args.sample else ''}) {shown}")
    print(f"{'task':14s}{'accuracy':>10s}{'loss':>9s}{'n':>7s}")
    for task, r in record["tasks"].items():
        print(f"{task:14s}{100 * r['accuracy']:9.1f}%{r['loss']:9.3f}{r['n']:7d}")
    print(f"{'average':14s}{100 * record['average_accuracy']:9.1f}%")
    if "excluded" in record:
        print(f"excluded from the trust region: {record['excluded']:,} of {record['N']:,} dimensions")
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tatr_core",
                                     description="TATR Studio: multi-task model merging with Task Arithmetic in Trust Region.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_merge(sub)
    _add_zoo(sub)
    _add_grads(sub)
    _add_eval(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TatrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
