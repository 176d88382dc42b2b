"""The shape of the code: layers that import downward only, run options read in one place, one key per
computation.  Static checks on the source (imports inside functions count as imports)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tatr_core"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Every module of tatr_core -> the modules of tatr_core it imports, anywhere in its body."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
        graph[name] = {e for e in edges if e in mods and e != name}
    return graph


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_package_has_no_import_circle():
    graph = import_graph()
    circles = sorted(m for m in graph if m in reaches(graph, m))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_the_analysis_stack_imports_downward_only():
    """cache ← keys ← runs ← points ← executors ← analysis ← figures ← cli / ui."""
    graph = import_graph()
    stack = ["tatr_core.cache", "tatr_core.keys", "tatr_core.runs", "tatr_core.points", "tatr_core.executors",
             "tatr_core.analysis", "tatr_core.figures"]
    for lower, higher in zip(stack, stack[1:]):
        assert lower in reaches(graph, higher), f"{higher} should build on {lower}"
    for n, module in enumerate(stack):
        above = set(stack[n + 1:]) | {"tatr_core.cli", "tatr_core.ui"}
        assert not reaches(graph, module) & above, f"{module} imports from a layer above it"


def test_only_the_options_module_reads_the_run_options_from_the_environment():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "options.py" and path.parent == PACKAGE:
            continue
        assert not re.search(r"environ(\.get|\[|\.setdefault)\(?\s*[\"']TATR_", text), path
        assert not re.search(r"environ\[[^]]+\]\s*=|environ\.(pop|update|clear)\(|putenv\(", text), path


def test_pages_hold_layout_and_build_no_keys_by_hand():
    """Pages build specs (tatr_core.*_spec), never cache or job keys, and never reach into the cache."""
    for path in (ROOT / "app_pages").glob("*.py"):
        text = path.read_text()
        assert "digest(" not in text and "job_key" not in text and "cache_dir" not in text, path
        assert "RUNNER" not in text and "Spec.of(" not in text, path
    assert not (ROOT / "pages").exists(), "pages/ would switch on Streamlit's legacy page discovery"
