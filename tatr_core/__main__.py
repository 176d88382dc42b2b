"""``python -m tatr_core``: Ctrl-C at any moment, even while torch is still importing, exits with
130 and one line, never a traceback (see :func:`tatr_core.interrupts_deferred`)."""
from . import interrupts_deferred, stop_on_interrupt

with interrupts_deferred():
    from .cli import main

status = main()
if status == 130:  # main() has said "interrupted"
    stop_on_interrupt(say=False)
raise SystemExit(status)
