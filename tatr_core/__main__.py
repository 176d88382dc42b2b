"""``python -m tatr_core``: Ctrl-C at any moment, even while torch is still importing, exits with
130 and one line, never a traceback."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
