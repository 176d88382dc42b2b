"""Run ``python -m tatr_core`` for a test: in process by default (the same ``main()`` the module runs,
seconds faster than a new interpreter), or as a real process where the process itself is the point.

Both return an object with ``returncode``, ``stdout`` and ``stderr``, like ``subprocess.run``.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, process: bool = False, timeout: int = 300) -> Ran:
    argv = [str(a) for a in args]
    if process:
        r = subprocess.run([sys.executable, "-m", "tatr_core", *argv], cwd=ROOT, capture_output=True, text=True,
                           timeout=timeout)
        return Ran(r.returncode, r.stdout, r.stderr)
    from tatr_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())
