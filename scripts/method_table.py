"""Print the reference tables generated from the registries' declarations.

    .venv/bin/python scripts/method_table.py            # docs/methods.md's method table
    .venv/bin/python scripts/method_table.py --figures  # docs/analyses.md's figure table

The docs hold this output between their ``method-table`` / ``figure-table`` markers; a test keeps them equal.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.figures.registry import markdown_table as figure_table  # noqa: E402
from tatr_core.merge import REGISTRY  # noqa: E402
from tatr_core.merge.registry import markdown_table  # noqa: E402

if __name__ == "__main__":
    print(figure_table() if "--figures" in sys.argv[1:] else markdown_table(REGISTRY.values()), end="")
