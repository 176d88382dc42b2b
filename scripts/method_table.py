"""Print the README's method table, generated from the methods' parameter declarations.

    .venv/bin/python scripts/method_table.py

The README holds this output between the ``method-table`` markers; a test keeps the two equal.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.merge import REGISTRY  # noqa: E402
from tatr_core.merge.registry import markdown_table  # noqa: E402

if __name__ == "__main__":
    print(markdown_table(REGISTRY.values()), end="")
