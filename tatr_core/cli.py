"""``python -m tatr_core``: the command line.

Every user error (bad file, bad option value, missing gradients) is printed as one line
``error: ...`` on stderr with exit code 2; argparse's own usage errors also exit with 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from .errors import OUT_OF_MEMORY, TatrError, out_of_memory


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
    p.add_argument("--seed", type=int, default=0, help="seed of a method's random draws (dare)")
    add_parameter_flags(p, free)
    p.add_argument("--out", required=True, metavar="MERGED.safetensors", help="where to write the merged encoder")
    p.add_argument("--layout", choices=["input", "vision"], default="input",
                   help="input (default): the pretrained checkpoint's own layout, so the result loads back into the "
                        "model the inputs came from (a whole CLIP keeps its text tower; Hugging Face keys stay Hugging "
                        "Face keys); vision: the bare open_clip vision tower (conv1.weight, ...)")
    p.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .checkpoints import in_layout_of, load_image_encoder, read_state_dict, save_safetensors
    from .merge import REGISTRY, merge, resolve_params
    from .paths import check_input, check_output_file, output_errors
    from .trust_region import SENSITIVITIES
    from .vectors import TaskVectors

    start = time.perf_counter()
    if REGISTRY[args.method].uses_data:
        raise TatrError(f"--method {args.method} learns from the tasks' images, which bare checkpoints do not carry: "
                        f"run it on a zoo (python -m tatr_core eval --zoo ZOO --method {args.method}); "
                        "merge takes " + ", ".join(m for m, s in REGISTRY.items() if not s.uses_data))
    own = method_kwargs(args)
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
        "excluded": result.excluded,
        "layout": args.layout,
        "tool": "tatr_core merge",
    }
    merged = tv.to_state_dict(result.theta)
    if args.layout == "input":
        merged = in_layout_of(merged, raw_pretrained)
    with output_errors("--out", out):
        save_safetensors(merged, out, metadata={"tatr_recipe": json.dumps(recipe)})
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
    b = zsub.add_parser("build", help="install or build a built-in zoo (cached under cache/zoos/)",
                        description="Put a built-in zoo in the cache: from the build shipped with the code when there "
                                    "is one for the preset's recipe (seconds: its weights are copied, its task images "
                                    "generated), else by building it (minutes). --from-scratch builds it whatever "
                                    "is shipped and checks the build against the shipped one.")
    b.add_argument("--preset", choices=list(PRESETS), default="mini")
    b.add_argument("--from-scratch", action="store_true",
                   help="pretrain and fine-tune here, then compare with the shipped build (bit-identical weight "
                        "files, each task's accuracies)")
    b.add_argument("--ship", action="store_true",
                   help="with --from-scratch: copy the build into tatr_core/zoo/shipped/ (after a recipe change)")
    b.set_defaults(func=_cmd_zoo_build)
    i = zsub.add_parser("info", help="tasks, classes, split sizes and reference accuracies of a zoo")
    i.add_argument("--zoo", default="mini", help="mini, micro or a manifest path")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=_cmd_zoo_info)


def _cmd_zoo_build(args: argparse.Namespace) -> int:
    from .zoo import mini

    if args.ship and not args.from_scratch:
        raise TatrError("--ship copies a build from scratch into the code: give --from-scratch with it")
    if args.from_scratch:
        bar = BarProgress(f"building zoo {args.preset} from scratch")
        try:
            folder = mini.build(args.preset, bar, from_scratch=True)
        finally:
            bar.close()
        info = json.loads((Path(folder) / "zoo.json").read_text())
        print(f"zoo {args.preset}: built from scratch in {info['build_seconds']} s, at {folder}")
        for line in mini.compare_with_shipped(args.preset, folder):
            print(line)
        if args.ship:
            print(f"shipped: {mini.ship(args.preset, folder)}")
        return 0
    zoo = _load_zoo(args.preset)
    how = (f"installed from the shipped build in {zoo.info['install_seconds']} s" if "install_seconds" in zoo.info
           else f"built in {zoo.info.get('build_seconds', '?')} s")
    print(f"zoo {zoo.name}: {len(zoo.tasks)} tasks, {how}, at {zoo.info['folder']}")
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
        "placement": zoo.placement(),
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
    print(f"compute: {summary['placement']}")
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
    from .paths import check_output_dir, output_errors

    if args.exemplars <= 0:
        raise TatrError(f"--exemplars must be at least 1, got {args.exemplars}")
    check_output_dir(args.out)
    zoo = _load_zoo(args.zoo)
    bar = BarProgress("gradients")
    try:
        grads = compute_task_gradients(zoo, args.exemplars, args.seed, progress=bar)
    finally:
        bar.close()
    with output_errors("--out", args.out):
        files = write_gradient_files(zoo, grads, args.out)
    print(f"wrote {len(files)} files for {len(zoo.tasks)} tasks ({args.exemplars} exemplars each, seed {args.seed}) to {args.out}")
    return 0


# ---------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .merge import REGISTRY
    from .runs import EVAL_METHODS
    from .trust_region import SENSITIVITIES

    p = sub.add_parser("eval", help="accuracy and loss per task of a method on a zoo")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", required=True, choices=list(EVAL_METHODS))
    p.add_argument("--tau", type=float, default=None, help="TATR plug-in: fraction of dimensions excluded (0 = off)")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None,
                   help="exemplars per task for the gradients, Fisher and RegMean (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the exemplars, the training batches and --sample")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None, help="evaluate on a fixed seeded subsample of this size per task")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks")
    add_parameter_flags(p, REGISTRY.values())
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_precision_option(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .runs import evaluate_method, method_params

    own = method_kwargs(args)
    method_params(args.method, tau=args.tau, sensitivity=args.sensitivity, exemplars=args.exemplars, seed=args.seed,
                  **own)  # fail fast on bad options, before loading the zoo
    if args.exemplars is not None and args.exemplars <= 0:
        raise TatrError(f"--exemplars must be at least 1, got {args.exemplars}")
    zoo = _load_zoo(args.zoo)
    bar = BarProgress(f"eval {args.method}")
    try:
        record = evaluate_method(zoo, args.method, tau=args.tau, sensitivity=args.sensitivity,
                                 exemplars=args.exemplars, seed=args.seed, split=args.split, sample=args.sample,
                                 tasks=args.tasks, progress=bar, use_cache=not args.no_cache, **own)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({k: record[k] for k in ("method", "params", "tasks", "average_accuracy")}
                         | {k: record[k] for k in ("split", "sample", "zoo", "excluded", "N", "learned", "surgery")
                            if k in record}))
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


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from .merge import REGISTRY
    from .trust_region import SENSITIVITIES

    p = sub.add_parser("tune", help="choose a method's λ (and TATR's τ) on the validation split, then report test "
                                    "accuracy at the chosen values")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", required=True, choices=list(REGISTRY))
    p.add_argument("--tau", type=float, default=None,
                   help="TATR plug-in on (τ > 0: τ is chosen too) or off (0); default: the method's")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None, help="exemplars per task for the gradients (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=None, help="evaluate on a fixed seeded subsample of this size per task")
    p.add_argument("--lam-grid", type=float, nargs="+", default=None, metavar="L", help="λ values (default 0.1 … 1.0)")
    p.add_argument("--tau-grid", type=float, nargs="+", default=None, metavar="T",
                   help="τ values, fractions (default 0.001 0.002 0.005 0.01 0.02 0.05)")
    add_parameter_flags(p, REGISTRY.values())
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_executor_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from .analysis.tuning import tunable, tune
    from .runs import evaluate_method, method_params
    from .trust_region import check_tau

    own = method_kwargs(args)
    given = {k: v for k, v in {"tau": args.tau, "sensitivity": args.sensitivity, "exemplars": args.exemplars}.items()
             if v is not None}
    method_params(args.method, seed=args.seed, **given, **own)  # fail fast on bad options, before loading the zoo
    for value in args.tau_grid or []:
        check_tau(value)
    if not tunable(args.method, {**given, **own}):
        raise TatrError(f"'{args.method}' has nothing to choose on validation here: no λ, and no TATR τ to choose "
                        "(use a training-free method, or --tau > 0 with a non-negative sensitivity)")
    zoo = _load_zoo(args.zoo)
    bar = BarProgress(f"tune {args.method}")
    try:
        tuned = tune(zoo, args.method, sample=args.sample, progress=bar, lam_grid=args.lam_grid,
                     tau_grid=args.tau_grid, seed=args.seed, **given, **own)
        test = evaluate_method(zoo, args.method, sample=args.sample, seed=args.seed, progress=bar,
                               **{**given, **own, **tuned["chosen"]})
    finally:
        bar.close()
    if args.json:
        print(json.dumps({**tuned, "test": {k: test[k] for k in ("params", "tasks", "average_accuracy")}}))
        return 0
    chosen = ", ".join(f"{k} = {v:g}" for k, v in tuned["chosen"].items())
    print(f"{args.method} on zoo {zoo.name}: chosen on val {chosen} ({len(tuned['trace'])} points, "
          f"val accuracy {100 * tuned['val_accuracy']:.1f}%)")
    print(f"test accuracy at the chosen values: {100 * test['average_accuracy']:.1f}%")
    return 0


# ---------------------------------------------------------------------------- figures, tables, report
FIGURES = ("conflict", "components", "components-per-task", "landscape", "layer-sensitivity", "tau-sweep",
           "lambda-sweep", "exemplar-sweep", "sweep", "tsv-spectrum")
TABLES = ("methods", "sensitivity-variants", "generalization")


def _add_method_options(p: argparse.ArgumentParser) -> None:
    from .merge import REGISTRY
    from .trust_region import SENSITIVITIES

    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--method", choices=list(REGISTRY), default=None, help="merge method (default per figure)")
    p.add_argument("--tau", type=float, default=None, help="TATR plug-in: fraction of dimensions excluded (0 = off)")
    p.add_argument("--sensitivity", choices=list(SENSITIVITIES), default=None)
    p.add_argument("--exemplars", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None, help="images per task (fixed seeded subsample)")
    add_parameter_flags(p, REGISTRY.values())


#: parameters with flags of their own: they serve more than one method's parameter (the gradients
#: behind the trust region, every random draw of a run)
RUN_LEVEL = ("exemplars", "seed")


def parameter_users(methods) -> dict[str, tuple]:
    """{name: (the first declaration, [methods declaring it])} over ``methods``' parameters."""
    out: dict[str, tuple] = {}
    for m in methods:
        for param in m.parameters:
            if param.name not in RUN_LEVEL:
                out.setdefault(param.name, (param, []))[1].append(m)
    return out


def add_parameter_flags(p: argparse.ArgumentParser, methods) -> None:
    """One flag per parameter the methods declare (tatr_core.merge.registry.Param): type, choices and help
    come from the declarations; the default is each method's own (left out, the method decides)."""
    g = p.add_argument_group("method parameters (defaults are each method's own)")
    for name, (param, users) in parameter_users(list(methods)).items():
        choices = sorted({c for m in users for c in m.declared[name].choices}) or None
        defaults = {m.name: m.declared[name].default for m in users}
        if len(set(map(str, defaults.values()))) == 1:
            default_text = f"default {next(iter(defaults.values()))}"
        else:
            default_text = "defaults " + ", ".join(f"{m} {d}" for m, d in defaults.items())
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=param.kind, choices=choices, default=None,
                       metavar=None if choices else name.upper(),
                       help=f"{param.help}: {param.must()}; for {', '.join(defaults)} ({default_text})")


def method_kwargs(args: argparse.Namespace) -> dict:
    """The method parameters given on the command line (one a method does not declare is refused by
    ``resolve_params``, naming it)."""
    from .merge import REGISTRY

    return {k: getattr(args, k) for k in parameter_users(REGISTRY.values()) if getattr(args, k, None) is not None}


def _add_figure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figure", help="one figure of the paper for a zoo (PDF, SVG, PNG or HTML)")
    p.add_argument("kind", choices=FIGURES)
    _add_method_options(p)
    _add_executor_options(p)
    _add_precision_option(p)
    p.add_argument("--form", choices=["loss", "accuracy"], default="loss", help="conflict: loss or accuracy form")
    p.add_argument("--task", default=None, help="landscape: the task whose components span the plane (default: total loss)")
    p.add_argument("--step", type=float, default=0.1, help="landscape: grid step over [-0.2, 1.2]")
    p.add_argument("--orthogonal-fraction", type=float, default=None, metavar="F",
                   help="components, components-per-task, landscape: the share of the non-zero task-vector entries "
                        "with the smallest |g ⊙ Δ| that form Δ⊥ (the paper's '≈ 0'), in [0, 1] (default 0.9)")
    p.add_argument("--values", type=float, nargs="+", default=None, help="sweeps: the values to evaluate")
    p.add_argument("--parameter", default=None,
                   help="sweep: the parameter swept (tau, lam, exemplars, or one the method declares: density, drop_rate, ...)")
    p.add_argument("--per-task", action="store_true", help="sweeps: one line per task too")
    p.add_argument("--by", choices=["tensor", "block"], default="tensor", help="layer-sensitivity: columns")
    p.add_argument("--layer", default=None, help="tsv-spectrum: the 2-D tensor whose spectra to draw")
    p.add_argument("--layer-interference", action="store_true",
                   help="tsv-spectrum: the interference in --layer alone (default: its mean over the layers)")
    p.add_argument("--out", required=True, metavar="FILE.{pdf,svg,png,html}")
    p.set_defaults(func=_cmd_figure)


def _method_kwargs(args: argparse.Namespace) -> dict:
    kw = {k: getattr(args, k) for k in ("tau", "sensitivity", "exemplars")}
    return {k: v for k, v in kw.items() if v is not None} | method_kwargs(args)


def build_figure(kind: str, zoo, args: argparse.Namespace, progress, evaluator=None):
    """Run the analysis behind one figure and return the plotly figure (used by figure and report)."""
    from . import figures
    from .analysis import components, conflict, layers, sweeps, tsv_view

    kw = _method_kwargs(args)
    common = {"split": args.split, "sample": args.sample, "evaluator": evaluator, "progress": progress}
    if kind == "conflict":
        rec = conflict.conflict_matrix(zoo, args.method or "task_arithmetic", seed=args.seed, **kw, **common)
        return figures.conflict_figure(rec, args.form)
    grad_kw = {"exemplars": args.exemplars or 128, "seed": args.seed}
    fraction = getattr(args, "orthogonal_fraction", None)
    band = {"orthogonal_fraction": components.check_orthogonal_fraction(
        components.ORTHOGONAL_FRACTION if fraction is None else fraction)}
    if kind in ("components", "components-per-task"):
        lam = getattr(args, "lam", None)
        analysis = components.merged_component_accuracy if kind == "components" else components.component_accuracy
        rec = analysis(zoo, lam=0.3 if lam is None else lam, **grad_kw, **band, **common)
        return (figures.merged_components_figure if kind == "components" else figures.per_task_components_figure)(rec)
    if kind == "landscape":
        common["sample"] = args.sample or 200
        rec = components.loss_landscape(zoo, args.task, step=args.step, **grad_kw, **band, **common)
        return figures.landscape_figure(rec, args.task)
    if kind == "layer-sensitivity":
        rec = layers.layer_sensitivity(zoo, args.sensitivity or "gradient", args.tau if args.tau is not None else 0.01,
                                       progress=progress, **grad_kw)
        return figures.layer_sensitivity_figure(rec, args.by)
    if kind.endswith("sweep"):
        parameter = {"tau-sweep": "tau", "lambda-sweep": "lam", "exemplar-sweep": "exemplars"}.get(kind) or args.parameter
        if parameter is None:
            raise TatrError("figure sweep needs --parameter (tau, lam, exemplars, or one the method declares)")
        method = args.method or ("task_arithmetic" if parameter == "lam" else "tatr")
        if kind == "sweep" and args.method is None:
            raise TatrError("figure sweep needs --method (the method whose parameter is swept)")
        kw.pop(parameter, None)
        rec = sweeps.sweep(zoo, method, parameter, args.values, evaluator=evaluator, progress=progress,
                           split=args.split, sample=args.sample, seed=args.seed, **kw)
        return figures.sweep_figure(rec, args.per_task)
    if kind == "tsv-spectrum":
        return figures.tsv_spectrum_figure(tsv_view.tsv_view(zoo, progress=progress), args.layer,
                                           per_layer=args.layer_interference)
    raise TatrError(f"unknown figure '{kind}'")


def _cmd_figure(args: argparse.Namespace) -> int:
    from .figures import FORMATS, save_figure
    from .paths import check_output_file, output_errors

    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:
        raise TatrError(f"--out {out}: name the figure file .pdf, .svg, .png or .html")
    check_output_file(out)
    zoo = _load_zoo(args.zoo)
    bar = BarProgress(args.kind)
    try:
        fig = build_figure(args.kind, zoo, args, bar)
    finally:
        bar.close()
    with output_errors("--out", out):
        save_figure(fig, out)
    print(f"{args.kind} figure for zoo {zoo.name} -> {out}")
    return 0


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="a method table in the paper's layout (LaTeX, CSV or Markdown)")
    p.add_argument("kind", choices=TABLES)
    p.add_argument("--zoo", required=True)
    p.add_argument("--format", choices=["latex", "csv", "markdown"], default="markdown")
    p.add_argument("--held-out", nargs="+", default=None, help="generalization: held-out tasks (default: the last two)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--sample", type=int, default=None)
    p.add_argument("--out", default=None, metavar="FILE", help="write here instead of printing")
    _add_test_time_option(p)
    _add_fixed_option(p)
    _add_executor_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_table)


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the points run (README: Past one machine)")
    g.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="local: in this process (default, or $TATR_EXECUTOR); ray: Ray actors that each hold the zoo")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray: auto (the cluster `ray start --head` started here), host:port or ray://host:port; "
                        "default $TATR_RAY_ADDRESS, else a private local Ray with this machine's CPUs and GPUs")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="ray: number of workers (default $TATR_RAY_WORKERS, else one per GPU, or per CPU without GPUs)")


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="evaluation arithmetic: auto (bf16 autocast on a GPU where it predicts as float32 does, "
                        "else float32; default, or $TATR_PRECISION), fp32, bf16. Conflict matrices and "
                        "landscapes evaluate losses in float32 unless bf16 is asked for")


def _executor(args: argparse.Namespace):
    from .executors import LOCAL, check_reachable, get_executor

    if not hasattr(args, "executor"):
        return LOCAL
    if args.executor != "ray" and (args.ray_address or args.workers):
        if args.executor == "local" or (os.environ.get("TATR_EXECUTOR") or "local") == "local":
            raise TatrError("--ray-address and --workers need --executor ray")
    executor = get_executor(args.executor, args.ray_address, args.workers)
    if executor.name == "ray" and executor.address:  # an address nobody answers at is an error up front,
        check_reachable(executor.address)             # even when every point is already cached
    return executor


def _add_fixed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fixed", action="store_true",
                   help="methods, sensitivity-variants: every row at its method's fixed defaults (λ 0.3, τ 1%%) instead of "
                        "λ and τ chosen per row on the validation split (the papers' protocol, the default)")


def _add_test_time_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-time", action=argparse.BooleanOptionalAction, default=True,
                   help="methods: include the rows that train at test time (AdaMerging, Surgery; minutes per row on a "
                        "CPU the first time); --no-test-time leaves them out")


def build_table(kind: str, zoo, progress, held_out=None, split="test", sample=None, evaluator=None,
                test_time: bool = True, tune: bool = True) -> dict:
    from .analysis import tables

    if kind == "methods":
        return tables.method_table(zoo, tables.METHOD_ROWS, split=split, sample=sample, evaluator=evaluator,
                                   progress=progress, test_time=test_time, tune=tune)
    if kind == "sensitivity-variants":
        return tables.method_table(zoo, tables.SENSITIVITY_ROWS, split=split, sample=sample, evaluator=evaluator,
                                   progress=progress, title=f"TATR with each sensitivity (Table 6) on zoo {zoo.name}",
                                   tune=tune)
    return tables.generalization_table(zoo, held_out, split=split, sample=sample, evaluator=evaluator, progress=progress)


def _write_text(path: Path, text: str) -> None:
    from .cache import write_bytes_atomic

    write_bytes_atomic(path, text.encode())


def _cmd_table(args: argparse.Namespace) -> int:
    from .analysis.tables import RENDERERS
    from .paths import check_output_file, output_errors

    if args.out:
        check_output_file(args.out)
    zoo = _load_zoo(args.zoo)
    bar = BarProgress(f"table {args.kind}")
    try:
        table = build_table(args.kind, zoo, bar, args.held_out, args.split, args.sample, test_time=args.test_time,
                            tune=not args.fixed)
    finally:
        bar.close()
    text = RENDERERS[args.format](table)
    if args.out:
        with output_errors("--out", args.out):
            _write_text(Path(args.out), text)
        print(f"{args.kind} table ({args.format}) -> {args.out}")
    else:
        print(text, end="")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="every figure and table of the paper for a zoo, with an index")
    p.add_argument("--zoo", required=True)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], choices=["png", "pdf", "svg", "html"])
    _add_test_time_option(p)
    _add_fixed_option(p)
    _add_executor_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .analysis.tables import RENDERERS
    from .evaluate import Evaluator
    from .figures import save_figure
    from .paths import check_output_dir, output_errors

    out = check_output_dir(args.out)
    zoo = _load_zoo(args.zoo)
    with output_errors("--out", out):
        out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(zoo)
    base = dict(method=None, tau=None, sensitivity=None, exemplars=None, seed=0,
                split="test", sample=None, form="loss", task=None, step=0.1, values=None, parameter=None, per_task=False,
                by="tensor", layer=None, layer_interference=False, orthogonal_fraction=None)
    jobs = [
        ("conflict-task_arithmetic", "conflict", {"method": "task_arithmetic"}, "Knowledge conflict C_{j|i}, Task Arithmetic (Eq. 3)"),
        ("conflict-tatr", "conflict", {"method": "tatr"}, "Knowledge conflict C_{j|i}, TATR"),
        ("conflict-accuracy-task_arithmetic", "conflict", {"method": "task_arithmetic", "form": "accuracy"}, "Knowledge conflict, accuracy form"),
        ("components", "components", {}, "Merging one component: θ^pos, θ^neg, θ^orth (Figure 2a)"),
        ("components-per-task", "components-per-task", {}, "Components Δ⁺ / Δ⁻ / Δ⊥ of the other tasks' vector, per task"),
        ("landscape-total", "landscape", {}, "Total loss landscape (Figure 2c, Figure 6)"),
        (f"landscape-{zoo.task_names[0]}", "landscape", {"task": zoo.task_names[0]}, f"Loss landscape of {zoo.task_names[0]} (Figure 2b, Figure 5)"),
        ("layer-sensitivity", "layer-sensitivity", {}, "Sensitivity per layer (Figure 4)"),
        ("layer-sensitivity-blocks", "layer-sensitivity", {"by": "block"}, "Sensitivity per block (Figure 4)"),
        ("tau-sweep", "tau-sweep", {"per_task": True}, "Accuracy against τ (Figure 3b)"),
        ("lambda-sweep", "lambda-sweep", {}, "Accuracy against λ"),
        ("exemplar-sweep", "exemplar-sweep", {}, "Accuracy against the exemplar count (Figure 3a, Table 5)"),
        ("tsv-spectrum", "tsv-spectrum", {}, "Task singular vectors: spectra and interference"),
    ]
    tables = [("methods", "Methods (Table 1)"), ("sensitivity-variants", "Sensitivity variants (Table 6)"),
              ("generalization", "Generalization to held-out tasks (Table 4)")]
    bar = BarProgress(f"report {zoo.name}")
    index = [f"# TATR Studio report: zoo {zoo.name}", "",
             f"{len(zoo.tasks)} tasks ({', '.join(zoo.task_names)}), architecture {zoo.arch}, "
             f"N = {zoo.task_vectors.N:,} merged parameters. Generated by `python -m tatr_core report`.", "",
             "## Tables", ""]
    total = len(jobs) + len(tables)
    with output_errors("--out", out):
        try:
            for n, (kind, title) in enumerate(tables):
                bar(n / total, f"table {kind}")
                table = build_table(kind, zoo, lambda f, m: None, evaluator=evaluator, test_time=args.test_time,
                                    tune=not args.fixed)
                for fmt, suffix in (("latex", "tex"), ("csv", "csv"), ("markdown", "md")):
                    _write_text(out / f"table-{kind}.{suffix}", RENDERERS[fmt](table))
                index += [f"### {title}", "", RENDERERS["markdown"](table),
                          f"[LaTeX](table-{kind}.tex) · [CSV](table-{kind}.csv)", ""]
            index += ["## Figures", ""]
            for n, (name, kind, overrides, title) in enumerate(jobs):
                bar((len(tables) + n) / total, f"figure {name}")
                fig = build_figure(kind, zoo, argparse.Namespace(**{**base, **overrides}), lambda f, m: None, evaluator)
                files = [save_figure(fig, out / f"{name}.{fmt}").name for fmt in args.formats]
                index += [f"### {title}", ""]
                if "png" in args.formats:
                    index += [f"![{title}]({name}.png)", ""]
                index += [" · ".join(f"[{f.rsplit('.', 1)[1].upper()}]({f})" for f in files), ""]
        finally:
            bar.close()
        _write_text(out / "index.md", "\n".join(index) + "\n")
    print(f"report for zoo {zoo.name}: {len(jobs)} figures, {len(tables)} tables -> {out / 'index.md'}")
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
    _add_tune(sub)
    _add_figure(sub)
    _add_table(sub)
    _add_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: exit 0, 2 with ``error: ...`` for anything the user can fix (out of memory
    included, naming what to lower), 130 on Ctrl-C (nothing half-written: every write is atomic)."""
    try:
        args = build_parser().parse_args(argv)
        from .executors import using

        _report_warnings()
        with using(_executor(args)), _precision(getattr(args, "precision", None)):
            return int(args.func(args) or 0)
    except TatrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(exc):
            raise
        print(f"error: {OUT_OF_MEMORY} ({_first_line(exc)})", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _precision(precision: str | None):
    """``--precision`` as ``$TATR_PRECISION`` while the command runs (every evaluator it makes, and the
    Ray workers it starts, read it there); the previous value comes back after."""
    before = os.environ.get("TATR_PRECISION")
    if precision:
        os.environ["TATR_PRECISION"] = precision
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TATR_PRECISION", None)
        else:
            os.environ["TATR_PRECISION"] = before


def _report_warnings() -> None:
    """The library's warnings (points that failed on every try) as ``warning: ...`` lines on stderr."""
    log = logging.getLogger("tatr_core")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
