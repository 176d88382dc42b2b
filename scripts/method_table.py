"""Print the reference tables generated from the registries' declarations, or write them into the docs.

    .venv/bin/python scripts/method_table.py            # docs/methods.md's method table
    .venv/bin/python scripts/method_table.py --figures  # docs/analyses.md's figure table
    .venv/bin/python scripts/method_table.py --write    # both, written between the docs' markers

The docs hold this output between their ``method-table`` / ``figure-table`` markers; a test keeps them equal.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tatr_core.figures.registry import markdown_table as figure_table  # noqa: E402
from tatr_core.merge import REGISTRY  # noqa: E402
from tatr_core.merge.registry import markdown_table  # noqa: E402


def write(path: Path, marker: str, table: str) -> None:
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    head, rest = text.split(start, 1)
    path.write_text(head + start + table + end + rest.split(end, 1)[1])
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write(ROOT / "docs" / "methods.md", "method-table", markdown_table(REGISTRY.values()))
        write(ROOT / "docs" / "analyses.md", "figure-table", figure_table())
    else:
        print(figure_table() if "--figures" in sys.argv[1:] else markdown_table(REGISTRY.values()), end="")
