"""Method tables in the paper's layout (Tables 1, 4 and 6) and their LaTeX / CSV / Markdown forms.

Rows are methods, columns the tasks and their average; among the merge methods (not the
pretrained and individual baselines) the best entry of each column is bold and the second
underlined, as in the paper.  Every cell is an accuracy computed by
:func:`tatr_core.runs.evaluate_method` (cached).
"""
from __future__ import annotations

import csv
import io
from typing import Sequence

from ..errors import TatrError
from ..evaluate import Evaluator
from ..runs import BASELINES, evaluate_merge, evaluate_method, merge_inputs, merge_tasks, method_params
from ..zoo import Progress, Zoo, no_progress

#: methods whose plug-in rows also come in the zero-shot sensitivity (as the paper's Table 1 has them)
ZERO_SHOT_PLUGIN_ROWS = ("ties",)
#: methods with no "& TATR" row: TATR itself, Task Arithmetic (with TATR it is the TATR row) and Weight
#: Averaging (not among the paper's plug-in rows)
NO_PLUGIN_ROW = ("tatr", "task_arithmetic", "average")


def method_rows() -> list[tuple[str, str, str, dict]]:
    """Table 1's rows from the registry: (label, group, method, parameters).

    The baselines; every method's own rows in registry order (its declared ``rows``), grouped as
    the paper groups them; TATR and every method with the TATR plug-in at τ = 1%; the Table 6
    sensitivity variants not already among them.  A newly registered method appears here, plain
    and with TATR, without this module changing.
    """
    from ..merge import REGISTRY

    rows = [("Pre-trained", "Basic baselines", "pretrained", {}), ("Individual", "Basic baselines", "individual", {})]
    for spec in REGISTRY.values():
        if spec.name != "tatr":
            rows += [(label, spec.group, spec.name, kw) for label, kw in spec.rows]
    rows += [("TATR zero-shot", "TATR", "tatr", {"sensitivity": "zero-shot"}), ("TATR", "TATR", "tatr", {})]
    for spec in REGISTRY.values():
        if spec.plugin and spec.name not in NO_PLUGIN_ROW:
            for label, kw in spec.rows:
                if spec.name in ZERO_SHOT_PLUGIN_ROWS:
                    rows.append((f"{label} & TATR zero-shot", "TATR", spec.name,
                                 {**kw, "tau": 0.01, "sensitivity": "zero-shot"}))
                rows.append((f"{label} & TATR", "TATR", spec.name, {**kw, "tau": 0.01}))
    rows += [(f"TATR {v}", "Sensitivity variants", "tatr", {"sensitivity": v}) for v in ("positive", "negative", "ntk")]
    return rows


#: (label, group, method, parameters) — Table 1's rows as the registry stands at import
METHOD_ROWS = method_rows()
#: Table 6: TATR with each sensitivity.
SENSITIVITY_ROWS = [
    ("Pre-trained", "Basic baselines", "pretrained", {}),
    ("TATR positive", "Sensitivity", "tatr", {"sensitivity": "positive"}),
    ("TATR negative", "Sensitivity", "tatr", {"sensitivity": "negative"}),
    ("TATR ntk", "Sensitivity", "tatr", {"sensitivity": "ntk"}),
    ("TATR zero-shot", "Sensitivity", "tatr", {"sensitivity": "zero-shot"}),
    ("TATR", "Sensitivity", "tatr", {"sensitivity": "gradient"}),
]


def _mark(rows: list[dict], columns: list[str]) -> None:
    """Add ``rank`` {column: 1 (best) | 2 (second)} to each merge-method row."""
    for row in rows:
        row["rank"] = {}
    candidates = [r for r in rows if r["method"] not in BASELINES]
    for col in columns:
        values = sorted({r["values"][col] for r in candidates}, reverse=True)
        for r in candidates:
            if values and r["values"][col] == values[0]:
                r["rank"][col] = 1
            elif len(values) > 1 and r["values"][col] == values[1]:
                r["rank"][col] = 2


def trains_at_test_time(method: str) -> bool:
    """Whether a row's method trains on unlabelled test images (AdaMerging, Surgery): minutes per row."""
    from ..merge import REGISTRY

    return method in REGISTRY and REGISTRY[method].group == "Test-time training methods"


def method_table(zoo: Zoo, rows: Sequence[tuple] = METHOD_ROWS, *, split: str = "test", sample: int | None = None,
                 evaluator: Evaluator | None = None, progress: Progress = no_progress, title: str = "",
                 test_time: bool = True, tune: bool = False) -> dict:
    """Accuracy (%) of each row's method on every task, with the average; best / second marked.

    ``test_time=False`` leaves out the rows whose method trains at test time (seconds instead of
    minutes per row on a laptop); the table's ``"test_time"`` says which it holds.
    ``tune=True`` chooses each row's λ (and τ for the TATR rows) on the validation split first
    (:mod:`tatr_core.analysis.tuning`) and reports ``split`` accuracy at the chosen values, which each
    row carries in ``"chosen"``; otherwise every row uses its method's fixed defaults.
    """
    from .tuning import check_validation_split, tunable
    from .tuning import tune as tune_row

    rows = [r for r in rows if test_time or not trains_at_test_time(r[2])]
    evaluator = evaluator or Evaluator(zoo)
    if tune:
        check_validation_split(zoo)
    names = zoo.task_names
    out_rows = []
    for n, (label, group, method, kw) in enumerate(rows):
        progress(n / len(rows), f"table: {label}")
        searched = bool(tune and tunable(method, kw))  # the validation search takes most of the row's time

        def row_progress(start: float, share: float, n=n, label=label) -> Progress:
            return lambda f, m: progress((n + start + share * f) / len(rows), f"{label}: {m}")

        chosen: dict = {}
        if searched:
            chosen = tune_row(zoo, method, evaluator=evaluator, sample=sample, progress=row_progress(0.0, 0.8),
                              **kw)["chosen"]
        rec = evaluate_method(zoo, method, split=split, sample=sample, evaluator=evaluator,
                              progress=row_progress(0.8, 0.2) if searched else row_progress(0.0, 1.0),
                              **{**kw, **chosen})
        values = {t: 100 * rec["tasks"][t]["accuracy"] for t in names}
        values["Avg"] = 100 * rec["average_accuracy"]
        out_rows.append({"label": label, "group": group, "method": method, "params": rec["params"], "values": values,
                         "chosen": chosen})
    columns = names + ["Avg"]
    _mark(out_rows, columns)
    progress(1.0, "table done")
    return {"title": title or f"Test accuracy (%) on zoo {zoo.name}", "columns": columns, "rows": out_rows,
            "split": split, "sample": sample, "test_time": test_time, "tuned": tune}


def chosen_text(row: dict) -> str:
    """A row's values chosen on validation, as the tables print them ("λ 0.4, τ 0.5%"; "" when none)."""
    chosen = row.get("chosen") or {}
    parts = []
    if "lam" in chosen:
        parts.append(f"λ {chosen['lam']:g}")
    if "tau" in chosen:
        parts.append(f"τ {100 * chosen['tau']:g}%")
    return ", ".join(parts)


def _tuned(table: dict) -> bool:
    return bool(table.get("tuned")) and any(row.get("chosen") for row in table["rows"])


CHOSEN_COLUMN = "chosen on val"


def generalization_table(zoo: Zoo, held_out: Sequence[str] | None = None, *, methods: Sequence[tuple] | None = None,
                         split: str = "test", sample: int | None = None, evaluator: Evaluator | None = None,
                         progress: Progress = no_progress) -> dict:
    """Table 4: merge all tasks but ``held_out`` (default: the last two), evaluate every task.

    Columns: the merged tasks and their average, then the held-out tasks and their average.
    """
    names = zoo.task_names
    held_out = list(held_out) if held_out is not None else names[-2:]
    seen = [t for t in names if t not in held_out]
    if not seen or not held_out:
        raise TatrError("generalization needs at least one merged and one held-out task")
    zoo.check_tasks(held_out)
    methods = methods or [("Task Arithmetic", "task_arithmetic", {}), ("TATR", "tatr", {})]
    evaluator = evaluator or Evaluator(zoo)
    idx = [names.index(t) for t in seen]
    rows = []
    for n, (label, method, kw) in enumerate(methods):
        progress(n / len(methods), f"generalization: {label}")
        params = method_params(method, **kw)
        res = evaluate_merge(evaluator, merge_tasks(zoo, method, params, merge_inputs(zoo, params), idx), names,
                             split, sample)
        values = {t: 100 * res[t].accuracy for t in names}
        values["Avg (merged)"] = sum(values[t] for t in seen) / len(seen)
        values["Avg (held out)"] = sum(values[t] for t in held_out) / len(held_out)
        rows.append({"label": label, "group": "", "method": method, "params": params, "values": values})
    columns = seen + ["Avg (merged)"] + held_out + ["Avg (held out)"]
    _mark(rows, columns)
    return {"title": f"Generalization to held-out tasks ({', '.join(held_out)}) on zoo {zoo.name}",
            "columns": columns, "rows": rows, "held_out": held_out, "split": split, "sample": sample}


# ------------------------------------------------------------------------------ renderers
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in str(text))


def to_latex(table: dict) -> str:
    """A booktabs ``table`` environment: best bold, second underlined, groups as \\midrule sections."""
    cols = table["columns"]
    tuned = _tuned(table)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + latex_escape(table["title"]) + "}",
             r"\begin{tabular}{l" + "r" * len(cols) + ("l" if tuned else "") + "}", r"\toprule",
             "Method & " + " & ".join(latex_escape(c) for c in cols)
             + (r" & $\lambda$, $\tau$ (val)" if tuned else "") + r" \\", r"\midrule"]
    group = None
    for n, row in enumerate(table["rows"]):
        if row["group"] != group and n > 0 and row["group"]:
            lines.append(r"\midrule")
        group = row["group"]
        cells = []
        for c in cols:
            v = f"{row['values'][c]:.1f}"
            rank = row["rank"].get(c)
            cells.append(r"\textbf{" + v + "}" if rank == 1 else r"\underline{" + v + "}" if rank == 2 else v)
        if tuned:
            cells.append(chosen_text(row).replace("λ", "$\\lambda$").replace("τ", "$\\tau$").replace("%", r"\%"))
        lines.append(latex_escape(row["label"]) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(table: dict) -> str:
    cols = table["columns"]
    tuned = _tuned(table)
    lines = [f"**{table['title']}**", "", "| Method | " + " | ".join(cols) + (f" | {CHOSEN_COLUMN}" if tuned else "") + " |",
             "|---|" + "---:|" * len(cols) + ("---|" if tuned else "")]
    for row in table["rows"]:
        cells = []
        for c in cols:
            v = f"{row['values'][c]:.1f}"
            rank = row["rank"].get(c)
            cells.append(f"**{v}**" if rank == 1 else f"<u>{v}</u>" if rank == 2 else v)
        if tuned:
            cells.append(chosen_text(row))
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    tuned = _tuned(table)
    w.writerow(["method", "group", *table["columns"], *(["lam (val)", "tau (val)"] if tuned else [])])
    for row in table["rows"]:
        chosen = row.get("chosen") or {}
        w.writerow([row["label"], row["group"], *(f"{row['values'][c]:.2f}" for c in table["columns"]),
                    *([chosen.get("lam", ""), chosen.get("tau", "")] if tuned else [])])
    return buf.getvalue()


RENDERERS = {"latex": to_latex, "markdown": to_markdown, "csv": to_csv}
