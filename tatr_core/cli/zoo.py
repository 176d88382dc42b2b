"""``zoo build``, ``zoo info``, ``zoo init`` and ``zoo prepare``: put a built-in zoo in the cache; describe any zoo;
write a manifest from the local Hugging Face caches (or a task_vectors folder); preprocess a zoo's images."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import time

import yaml

from ..errors import TatrError
from ..paths import check_output_file, output_errors
from ..zoo import catalog, mini
from ..zoo.mini import PRESETS
from .common import BarProgress, open_zoo, peak_rss_gib, write_text


def add(sub: argparse._SubParsersAction) -> None:
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
    n = zsub.add_parser("init", help="write a manifest for a standard benchmark from the local Hugging Face cache, or "
                                     "for a task_vectors checkpoint folder",
                        description="Offline: find each task's fine-tuned model and dataset of --benchmark in the "
                                    "Hugging Face caches (the hub cache's parquet files, or the datasets library's "
                                    "prepared Arrow cache), write a manifest of the tasks found, and name each missing "
                                    "model or dataset with the command that fetches it. The zero-shot heads come from "
                                    "the pretrained CLIPModel's text tower. Or, with --task-vectors and --data, a "
                                    "manifest for a task_vectors checkpoint folder and its image folders.")
    n.add_argument("--benchmark", choices=list(catalog.catalog()["benchmarks"]), default=None,
                   help="ta8 (Task Arithmetic's 8 tasks), tall14 or tall20")
    n.add_argument("--arch", default=None, help="ViT-B-32, ViT-B-16 or ViT-L-14 (with --task-vectors: the open_clip "
                                                "architecture of the checkpoints)")
    n.add_argument("--hf-cache", default=None, metavar="DIR", help="the hub cache (default: HF_HUB_CACHE / HF_HOME)")
    n.add_argument("--tasks", nargs="+", default=None, help="only these tasks of the benchmark")
    n.add_argument("--open-clip-arch", default=None, metavar="NAME",
                   help="the open_clip architecture written into the manifest (default: the catalog's, e.g. "
                        "ViT-B-32-quickgelu for OpenAI weights)")
    n.add_argument("--task-vectors", default=None, metavar="DIR", help="a task_vectors folder (checkpoints/<model>)")
    n.add_argument("--data", default=None, metavar="DIR", help="with --task-vectors: the tasks' image folders")
    n.add_argument("--out", required=True, metavar="ZOO.yaml")
    n.set_defaults(func=_cmd_zoo_init)
    r = zsub.add_parser("prepare", help="decode and preprocess every image of a zoo's splits, on every core",
                        description="Fill each split's memory-mapped image cache now (otherwise images are decoded as "
                                    "computations first use them): on every core, with a progress bar and the time "
                                    "left; an interrupted run goes on where it stopped.")
    r.add_argument("--zoo", required=True, help="a manifest path")
    r.add_argument("--tasks", nargs="+", default=None)
    r.add_argument("--splits", nargs="+", choices=["train", "val", "test"], default=None)
    r.add_argument("--jobs", type=int, default=None, help="decoding processes (default: every core)")
    r.set_defaults(func=_cmd_zoo_prepare)


def _cmd_zoo_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output_file(out)
    if args.task_vectors or args.data:
        if not (args.task_vectors and args.data and args.arch):
            raise TatrError("--task-vectors needs --data (the tasks' image folders) and --arch (the open_clip "
                            "architecture of the checkpoints)")
        manifest, missing = catalog.init_task_vectors(args.task_vectors, args.data, args.arch), []
    else:
        if not (args.benchmark and args.arch):
            raise TatrError("give --benchmark (ta8, tall14, tall20) and --arch (ViT-B-32, ViT-B-16, ViT-L-14), or "
                            "--task-vectors DIR --data DIR --arch ARCH")
        manifest, missing = catalog.init(args.benchmark, args.arch, args.hf_cache, args.tasks, args.open_clip_arch)
    with output_errors("--out", out):
        write_text(out, yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=120))
    print(f"{out}: {len(manifest['tasks'])} tasks ({', '.join(manifest['tasks'])})")
    if missing:
        print(f"missing ({len(missing)}), fetch on a machine with access, then copy the cache here:")
        for line in missing:
            print(f"  {line}")
    return 0


def _cmd_zoo_prepare(args: argparse.Namespace) -> int:
    zoo = open_zoo(args.zoo)
    names = zoo.check_tasks(args.tasks)
    start, total = time.perf_counter(), 0
    for name in names:
        for split, (images, _) in zoo.tasks[name].splits.items():
            if args.splits and split not in args.splits:
                continue
            if not hasattr(images, "decode_all"):
                raise TatrError(f"zoo {zoo.name}: a built-in zoo holds its images in memory; nothing to prepare")
            with BarProgress(f"{name}/{split}") as bar:
                done = images.decode_all(progress=bar, jobs=args.jobs)
            total += done
            print(f"{name}/{split}: {len(images):,} images, {done:,} decoded now -> {images.path}")
    seconds = time.perf_counter() - start
    rate = f", {total / seconds:.0f} images/s" if total and seconds > 0 else ""
    print(f"prepared {total:,} images in {seconds:.1f} s{rate}; peak RSS {peak_rss_gib():.2f} GiB")
    return 0


def _cmd_zoo_build(args: argparse.Namespace) -> int:
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
    zoo = open_zoo(args.preset)
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
    summary = _zoo_summary(open_zoo(args.zoo))
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
