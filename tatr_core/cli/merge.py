"""``merge``: K fine-tuned checkpoints into one, with any training-free method of the registry."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..checkpoints import in_layout_of, load_image_encoder, read_state_dict, save_safetensors
from ..errors import TatrError
from ..merge import REGISTRY, merge, resolve_params
from ..paths import check_input, check_output_file, check_space, inside, output_errors, safe_name
from ..trust_region import SENSITIVITIES
from ..vectors import TaskVectors
from .common import add_parameter_flags, add_plugin_flags, method_kwargs, peak_rss_gib, seed_value


def add(sub: argparse._SubParsersAction) -> None:
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
    free = [m for m in REGISTRY.values() if not m.uses_data]
    p.add_argument("--method", required=True, choices=list(REGISTRY), help="merge method")
    p.add_argument("--tau", type=float, default=None,
                   help="fraction of dimensions excluded from the trust region (default 0.01 for tatr, 0 = off for the others)")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None,
                   help="sensitivity Ω of the trust region (default gradient)")
    p.add_argument("--grads", nargs="+", metavar="G", default=None,
                   help="per-task E|∇L_k| files (same keys as the model), one per fine-tuned model, same order")
    p.add_argument("--signed-grads", nargs="+", metavar="S", default=None,
                   help="per-task E∇L_k files, for --sensitivity positive/negative")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of a method's random draws (dare)")
    add_parameter_flags(p, free)
    add_plugin_flags(p)
    p.add_argument("--out", required=True, metavar="MERGED.safetensors",
                   help="where to write the merged encoder (a task-aware method, such as emr or tsv_c, also writes "
                        "each task's own model beside it: MERGED.<task>.safetensors)")
    p.add_argument("--layout", choices=["input", "vision"], default="input",
                   help="input (default): the pretrained checkpoint's own layout, so the result loads back into the "
                        "model the inputs came from (a whole CLIP keeps its text tower; Hugging Face keys stay Hugging "
                        "Face keys); vision: the bare open_clip vision tower (conv1.weight, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if REGISTRY[args.method].uses_data:
        raise TatrError(f"--method {args.method} learns from the tasks' images, which bare checkpoints do not carry: "
                        f"run it on a zoo (python -m tatr_core eval --zoo ZOO --method {args.method}); "
                        "merge takes " + ", ".join(m for m, s in REGISTRY.items() if not s.uses_data))
    own = method_kwargs(args)
    if "seed" in REGISTRY[args.method].declared:  # a method's own random draws (DARE's drops)
        own["seed"] = args.seed
    params = resolve_params(args.method, tau=args.tau, sensitivity=args.sensitivity, **own)
    needs = SENSITIVITIES[params["sensitivity"]].needs if params["tau"] > 0 else ""
    if needs == "grads" and not args.grads:
        raise TatrError(f"--method {args.method} with τ > 0 and sensitivity '{params['sensitivity']}' needs --grads "
                        "(E|∇L_k| per fine-tuned model, from 'python -m tatr_core grads'), or use --sensitivity zero-shot")
    if needs == "signed_grads" and not args.signed_grads:
        raise TatrError(f"sensitivity '{params['sensitivity']}' needs --signed-grads (E∇L_k per fine-tuned model)")
    aux_files = {"grads": args.grads or [], "signed_grads": args.signed_grads or []}
    for name, files in aux_files.items():
        if files and len(files) != len(args.finetuned):
            raise TatrError(f"--{name.replace('_', '-')}: {len(files)} files for {len(args.finetuned)} fine-tuned models; "
                            "give one per model, same order")
    inputs = [args.pretrained, *args.finetuned, *aux_files["grads"], *aux_files["signed_grads"]]
    for path in inputs:
        check_input(path, "checkpoint")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise TatrError(f"--out {out}: the merged model is written as safetensors; name it *.safetensors")
    check_output_file(out, "--out", inputs)

    raw_pretrained = read_state_dict(args.pretrained) if args.layout == "input" else None  # read once, for both
    tv = TaskVectors.from_files(args.pretrained, args.finetuned, pretrained_raw=raw_pretrained)
    aux = {}
    for name, files in aux_files.items():  # every file given is checked, whether or not this merge uses it
        if files:
            flat = tv.flatten_aux([load_image_encoder(f) for f in files], files, name.replace("_", " "))
            if needs == name:
                aux[name] = flat
    result = merge(tv, args.method, tau=params["tau"], sensitivity=params.get("sensitivity"),
                   **{k: v for k, v in params.items() if k not in ("tau", "sensitivity")}, **aux)
    recipe = {
        "method": args.method,
        "params": result.params,
        "pretrained": str(args.pretrained),
        "finetuned": [str(f) for f in args.finetuned],
        **{name: [str(f) for f in files] for name, files in aux_files.items() if files},
        "excluded": result.excluded,
        "layout": args.layout,
        "tool": "tatr_core merge",
    }
    files = {out: result.theta}
    if result.task_theta is not None:  # one model per task, beside the one model
        files |= {inside(out.parent, f"{out.stem}.{safe_name(name)}{out.suffix}"): name for name in result.task_names}
        for path in list(files)[1:]:
            check_output_file(path, "--out", inputs)
    per_file = sum(t.numel() * t.element_size() for t in tv.to_state_dict(result.theta).values())
    check_space(out, per_file * len(files), f"--out {out}: the merged model" + ("s" if len(files) > 1 else ""),
                "choose a folder with room")
    for path, what in files.items():
        theta = result.theta_for(what) if isinstance(what, str) else what
        merged = tv.to_state_dict(theta)
        if args.layout == "input":
            merged = in_layout_of(merged, raw_pretrained)
        task = {"task": what} if isinstance(what, str) else {}
        with output_errors("--out", path, per_file):
            save_safetensors(merged, path, metadata={"tatr_recipe": json.dumps({**recipe, **task})})
    pct = 100.0 * result.excluded / tv.N
    shown = " ".join(f"{k}={v}" for k, v in result.params.items())
    beside = f" (and {len(files) - 1} task models beside it)" if len(files) > 1 else ""
    print(f"{args.method}: K={tv.K} N={tv.N:,} excluded={result.excluded:,} ({pct:.2f}%) {shown} "
          f"time={time.perf_counter() - start:.1f}s peak_rss={peak_rss_gib():.1f}GiB -> {out}{beside}")
    return 0
