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


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tatr_core",
                                     description="TATR Studio: multi-task model merging with Task Arithmetic in Trust Region.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_merge(sub)
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
