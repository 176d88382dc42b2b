"""``figure``: one figure of the registry (:mod:`tatr_core.figures.registry`) for a zoo, as PDF, SVG,
PNG or HTML.  The choices and the flags are generated from the figures' declarations."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import TatrError
from ..figures import FIGURES, STYLES, build_figure, caption_of, save_figure
from ..figures.export import FORMATS
from ..figures.registry import method_parameter_names
from ..merge import REGISTRY
from ..paths import check_output_file, output_errors
from .common import (BarProgress, add_executor_options, add_parameter_flags, add_plugin_flags, add_precision_option,
                     flag, given, open_zoo)


def figure_parameters() -> dict[str, tuple]:
    """{name: (the first declaration, [figures declaring it])} over every figure's parameters."""
    out: dict[str, tuple] = {}
    for figure in FIGURES.values():
        for param in figure.params:
            out.setdefault(param.name, (param, []))[1].append(figure.name)
    return out


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figure", help="one figure of the paper for a zoo (PDF, SVG, PNG or HTML)",
                       description="Run the analysis behind one figure (cached results are read) and write it. "
                                   "Figures: " + "; ".join(f"{f.name}: {f.title}" for f in FIGURES.values()))
    p.add_argument("kind", choices=list(FIGURES), help="the figure")
    p.add_argument("--zoo", required=True, help="mini, micro or a manifest path")
    p.add_argument("--out", required=True, metavar="FILE.{pdf,svg,png,html}")
    p.add_argument("--style", choices=STYLES, default="screen",
                   help="screen: as the dashboard draws it; paper-single / paper-full: for a paper's column (3.25 in) "
                        "or full width (6.75 in), type at 8 / 7 pt there, no title (printed as the caption instead)")
    g = p.add_argument_group("figure parameters (each figure takes its own; defaults are the figure's)")
    methods_taken = method_parameter_names()
    for name, (param, figures) in figure_parameters().items():
        if name in methods_taken:
            continue  # declared by the methods too (λ): one flag, from the methods' declarations below
        flag(g, param, f"{param.help}: {param.must()}; for {', '.join(figures)}")
    add_parameter_flags(p, [m for m in REGISTRY.values()])
    add_plugin_flags(p)
    add_executor_options(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:
        raise TatrError(f"--out {out}: name the figure file .pdf, .svg, .png or .html")
    check_output_file(out)
    names = set(figure_parameters()) | method_parameter_names()
    params = given(args, names)
    zoo = open_zoo(args.zoo)
    with BarProgress(args.kind) as bar:
        fig = build_figure(args.kind, zoo, params, progress=bar)
    with output_errors("--out", out):
        save_figure(fig, out, args.style)
    print(f"{args.kind} figure for zoo {zoo.name} -> {out}")
    if args.style != "screen":
        print(f"caption: {caption_of(fig)}")
    return 0
