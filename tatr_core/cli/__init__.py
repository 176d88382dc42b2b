"""``python -m tatr_core``: the command line, one module per command.

=========  ==========================================================================
command    module
=========  ==========================================================================
merge      :mod:`.merge` — K fine-tuned checkpoints into one (any training-free method)
zoo        :mod:`.zoo` — build (install) a built-in zoo; describe any zoo
grads      :mod:`.grads` — per-task gradients at θ_pre as files for ``merge --grads``
eval       :mod:`.eval` — accuracy and loss per task of a method on a zoo
tune       :mod:`.tune` — λ (and τ) chosen on validation, then test accuracy
figure     :mod:`.figure` — one figure of the registry (flags generated from its declarations)
table      :mod:`.table` — Tables 1, 6, 4 in the paper's layout
report     :mod:`.report` — every table and figure, with an index
=========  ==========================================================================

Every user error (bad file, bad option value, missing gradients) is printed as one line
``error: ...`` on stderr with exit code 2; argparse's own usage errors also exit with 2.  A command
runs under its run options (:class:`tatr_core.options.RunOptions`: the environment's, with its
``--precision``, ``--executor``, ``--ray-address`` and ``--workers``).
"""
from __future__ import annotations

import argparse
import logging
import sys

from .. import executors, options
from ..errors import OUT_OF_MEMORY, TatrError, out_of_memory
from . import eval as eval_command
from . import figure, grads, merge, report, table, tune, zoo
from .common import executor_of, run_options

COMMANDS = (merge, zoo, grads, eval_command, tune, figure, table, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tatr_core",
                                     description="TATR Studio: multi-task model merging with Task Arithmetic in Trust Region.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: exit 0, 2 with ``error: ...`` for anything the user can fix (out of memory
    included, naming what to lower), 130 on Ctrl-C (nothing half-written: every write is atomic)."""
    try:
        args = build_parser().parse_args(argv)
        report_warnings()
        with options.using(run_options(args)):
            with executors.using(executor_of(args)):
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
        print(f"error: {OUT_OF_MEMORY} ({first_line(exc)})", file=sys.stderr)
        return 2


def report_warnings() -> None:
    """The library's warnings (points that failed on every try, damaged cache entries) as ``warning: ...``
    lines on stderr."""
    log = logging.getLogger("tatr_core")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
