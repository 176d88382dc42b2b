"""``zoo build`` and ``zoo info``: put a built-in zoo in the cache; describe any zoo."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import TatrError
from ..zoo import mini
from ..zoo.mini import PRESETS
from .common import BarProgress, open_zoo


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
