"""TATR Studio core library: task vectors, merge methods, the TATR trust region, checkpoint I/O.

Importing the package installs the torchvision-on-CPU-torch shim (:mod:`tatr_core.compat`)
first, so ``import open_clip`` works anywhere after ``import tatr_core``.
"""
import contextlib
import signal
import sys
import threading


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C while the heavy libraries import is held until the import is done, then exits 130 with
    one line. Raising KeyboardInterrupt inside torch's import can land in a C++ callback (pybind11),
    which aborts the process (SIGABRT, no message) instead of unwinding. Only for ``python -m
    tatr_core`` on the main thread; a program that imports the library keeps its own handler."""
    if sys.argv[:1] != ["-m"] or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    seen: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if seen:
        stop_on_interrupt()


def stop_on_interrupt(say: bool = True):
    """Exit 130 with one line; a second Ctrl-C while the interpreter shuts down is ignored (it
    would otherwise end the process by the signal, with no exit status of ours)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if say:
        print("interrupted", file=sys.stderr)
    raise SystemExit(130)


with interrupts_deferred():
    from . import compat  # noqa: F401  (must come before anything that imports torchvision / open_clip)

__version__ = "0.1.0"
