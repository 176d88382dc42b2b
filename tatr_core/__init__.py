"""TATR Studio core library: task vectors, merge methods, the TATR trust region, checkpoint I/O.

Importing the package installs the torchvision-on-CPU-torch shim (:mod:`tatr_core.compat`)
first, so ``import open_clip`` works anywhere after ``import tatr_core``.
"""
try:
    from . import compat  # noqa: F401  (must come before anything that imports torchvision / open_clip)
except KeyboardInterrupt:
    import sys

    if sys.argv[:1] == ["-m"]:  # `python -m tatr_core` interrupted while torch imports: no traceback
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise

__version__ = "0.1.0"
