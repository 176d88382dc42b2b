"""Method tables in the paper's layout (Tables 1, 4 and 6) and their LaTeX / CSV / Markdown forms.

Rows are methods, columns the tasks and their average; among the merge methods (not the
pretrained and individual baselines) the best entry of each column is bold and the second
underlined, as in the paper.  Every cell is an accuracy computed by
:func:`tatr_core.runs.evaluate_method` (cached).
"""
from __future__ import annotations

import csv
import io
import re
from typing import Callable, Sequence

from ..cache import digest
from ..errors import TatrError
from ..evaluate import Evaluator
from ..executors import run_points
from ..keys import REVISIONS, Spec
from ..merge import PLUGINS, REGISTRY
from ..points import Shared
from ..runs import BASELINES, method_params
from ..zoo import Progress, Zoo, no_progress
from .conflict import subset_points
from .registry import Context, has_keys, register
from .sweeps import run_methods
from .tuning import check_validation_split, tunable
from .tuning import tune as tune_row

#: methods whose plug-in rows also come in the zero-shot sensitivity (as the paper's Table 1 has them)
ZERO_SHOT_PLUGIN_ROWS = ("ties",)
#: methods with no "& TATR" row: TATR itself, Task Arithmetic (with TATR it is the TATR row) and Weight
#: Averaging (not among the paper's plug-in rows)
NO_PLUGIN_ROW = ("tatr", "task_arithmetic", "average")
#: the row groups, labelled as the paper's Table 1 labels them (registry group -> label)
BASIC = "Basic baseline methods"
GROUP_LABELS = {"Training-free methods": "Training-free methods",
                "Test-time training methods": "Test-time training based methods"}


def method_rows() -> list[tuple[str, str, str, dict]]:
    """Table 1's rows from the registry: (label, group, method, parameters).

    The basic baselines; then every method's own rows in registry order (its declared ``rows``),
    grouped as the paper groups them, each followed by its "& TATR" rows (τ = 1%; TATR and TATR
    zero-shot follow Task Arithmetic, of which they are the plug-in).  A newly registered method
    appears here, plain and with TATR, without this module changing.  The sensitivity variants are
    Table 6 (:data:`SENSITIVITY_ROWS`).
    """
    rows = [("Pre-trained", BASIC, "pretrained", {}), ("Individual", BASIC, "individual", {})]

    def other_plugins(method: str, label: str, group: str, kw: dict) -> list[tuple]:
        """The rows of the plug-ins after TATR (LiNeS) that declare ``method``: "<label> & LiNeS"."""
        return [(f"{label} & {plugin.label}", group, method, {**kw, **params})
                for plugin in PLUGINS.values() if plugin.name != "tatr"
                for on, params in plugin.rows if on == method]

    for spec in REGISTRY.values():
        if spec.name == "tatr":
            continue
        group = GROUP_LABELS.get(spec.group, spec.group)
        for label, kw in spec.rows:
            rows.append((label, group, spec.name, kw))
            if spec.name == "task_arithmetic":
                rows += other_plugins(spec.name, label, group, kw)
                rows += [("TATR zero-shot", group, "tatr", {"sensitivity": "zero-shot"}), ("TATR", group, "tatr", {})]
                rows += other_plugins("tatr", "TATR", group, {})
                continue
            if spec.plugin and spec.name not in NO_PLUGIN_ROW:
                if spec.name in ZERO_SHOT_PLUGIN_ROWS:
                    rows.append((f"{label} & TATR zero-shot", group, spec.name,
                                 {**kw, "tau": 0.01, "sensitivity": "zero-shot"}))
                rows.append((f"{label} & TATR", group, spec.name, {**kw, "tau": 0.01}))
            rows += other_plugins(spec.name, label, group, kw)
    return rows


def base_label(label: str) -> str | None:
    """The row a TATR row improves on ("Ties-Merging & TATR" → "Ties-Merging"; "TATR" → "Task
    Arithmetic"), or None for a row that is no plug-in."""
    if label in ("TATR", "TATR zero-shot"):
        return "Task Arithmetic"
    suffixes = [" & TATR zero-shot"] + [f" & {plugin.label}" for plugin in PLUGINS.values()]
    for suffix in suffixes:
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return None


#: (label, group, method, parameters) — Table 1's rows as the registry stands at import
METHOD_ROWS = method_rows()
#: Table 6: TATR with each sensitivity.
SENSITIVITY_ROWS = [
    ("Pre-trained", BASIC, "pretrained", {}),
    ("TATR positive", "Sensitivity", "tatr", {"sensitivity": "positive"}),
    ("TATR negative", "Sensitivity", "tatr", {"sensitivity": "negative"}),
    ("TATR ntk", "Sensitivity", "tatr", {"sensitivity": "ntk"}),
    ("TATR zero-shot", "Sensitivity", "tatr", {"sensitivity": "zero-shot"}),
    ("TATR", "Sensitivity", "tatr", {"sensitivity": "gradient"}),
]


def _mark(rows: list[dict], columns: list[str]) -> None:
    """Add ``rank`` {column: 1 (best) | 2 (second)} to each merge-method row, ranked among the rows of
    its own group (the training-free merges apart from the test-time ones, as the paper compares them)."""
    for row in rows:
        row["rank"] = {}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] not in BASELINES:
            groups.setdefault(r["group"], []).append(r)
    for candidates in groups.values():
        for col in columns:
            values = sorted({r["values"][col] for r in candidates}, reverse=True)
            for r in candidates:
                if values and r["values"][col] == values[0]:
                    r["rank"][col] = 1
                elif len(values) > 1 and r["values"][col] == values[1]:
                    r["rank"][col] = 2


def _add_gains(rows: list[dict]) -> None:
    """``gain``: a TATR row's average minus its base row's (None when the base is not in the table)."""
    avg = {r["label"]: r["values"].get("Avg") for r in rows}
    for r in rows:
        base = base_label(r["label"])
        r["base"] = base if base in avg else None
        r["gain"] = None if r["base"] is None or r["values"].get("Avg") is None else r["values"]["Avg"] - avg[base]


def stored_fraction(record: dict, tasks: int) -> float | None:
    """What a row keeps, as a fraction of its K fine-tuned task vectors: the method's own count when it
    reports one (TSV-C's compressed matrices, EMR's unified vector, masks and rescalers), 1/K for one
    merged model, 1 for the individual models, None for the pre-trained model."""
    if "stored_fraction" in record:
        return float(record["stored_fraction"])
    if record["method"] == "pretrained":
        return None
    return 1.0 if record["method"] == "individual" else 1.0 / tasks


def _has_stored(table: dict) -> bool:
    """Whether the table holds a task-aware row (one model per task): the "stored" column is shown then."""
    return any(row["method"] in REGISTRY and REGISTRY[row["method"]].task_aware and row.get("stored") is not None
               for row in table["rows"])


def _stored_text(row: dict) -> str:
    return "" if row.get("stored") is None else f"{100 * row['stored']:.1f}"


STORED_COLUMN = "stored (%)"


def trains_at_test_time(method: str) -> bool:
    """Whether a row's method trains on unlabelled test images (AdaMerging, Surgery): minutes per row."""
    return method in REGISTRY and REGISTRY[method].group == "Test-time training methods"


def method_table(zoo: Zoo, rows: Sequence[tuple] = METHOD_ROWS, *, split: str = "test", sample: int | None = None,
                 evaluator: Evaluator | None = None, progress: Progress = no_progress, title: str = "",
                 test_time: bool = True, tune: bool = False, on_update: Callable[[dict], None] | None = None) -> dict:
    """Accuracy (%) of each row's method on every task, with the average; best / second marked.

    ``test_time=False`` leaves out the rows whose method trains at test time (seconds instead of
    minutes per row on a laptop); the table's ``"test_time"`` says which it holds.
    ``tune=True`` chooses each row's λ (and τ for the TATR rows) on the validation split first
    (:mod:`tatr_core.analysis.tuning`) and reports ``split`` accuracy at the chosen values, which each
    row carries in ``"chosen"``; otherwise every row uses its method's fixed defaults.
    ``on_update(table_so_far)`` is called as each row finishes (the rows so far, marked, in the table's
    order), for pages that fill the table in as it is computed.  Without ``tune`` every row is one
    point and all of them run together on the current executor (:mod:`tatr_core.executors`).
    """
    rows = [r for r in rows if test_time or not trains_at_test_time(r[2])]
    if tune:
        check_validation_split(zoo)
    names = zoo.task_names
    done: dict[int, dict] = {}

    def row(n: int, record: dict, chosen: dict) -> dict:
        label, group, method, _ = rows[n]
        values = {t: 100 * record["tasks"][t]["accuracy"] for t in names}
        values["Avg"] = 100 * record["average_accuracy"]
        return {"label": label, "group": group, "method": method, "params": record["params"], "values": values,
                "chosen": chosen, "stored": stored_fraction(record, len(names))}

    def finished(n: int, record: dict, chosen: dict) -> None:
        done[n] = row(n, record, chosen)
        if on_update is not None and len(done) < len(rows):  # the rows so far, in the table's order
            on_update(_table(zoo, [dict(done[k]) for k in sorted(done)], title, split, sample, test_time, tune, len(rows)))

    if not tune:  # every row is one point: all of them together on the current executor
        calls = [{**kw, "method": method, "split": split, "sample": sample, "label": label}
                 for label, _, method, kw in rows]
        run_methods(zoo, calls, evaluator=evaluator, progress=progress, what="table rows",
                    on_result=lambda n, rec: finished(n, rec, {}))
    else:  # a row's validation search (its rounds run together), then its test point, row by row
        evaluator = evaluator or Evaluator(zoo)
        for n, (label, group, method, kw) in enumerate(rows):
            progress(n / len(rows), f"table: {label}")
            searched = bool(tunable(method, kw))  # the validation search takes most of the row's time

            def row_progress(start: float, share: float, n=n, label=label) -> Progress:
                return lambda f, m: progress((n + start + share * f) / len(rows), f"{label}: {m}")

            chosen: dict = {}
            if searched:
                chosen = tune_row(zoo, method, evaluator=evaluator, sample=sample, progress=row_progress(0.0, 0.8),
                                  **kw)["chosen"]
            rec, = run_methods(zoo, [{**kw, **chosen, "method": method, "split": split, "sample": sample, "label": label}],
                               evaluator=evaluator, progress=row_progress(0.8, 0.2) if searched else row_progress(0.0, 1.0))
            finished(n, rec, chosen)
    progress(1.0, "table done")
    return _table(zoo, [done[k] for k in sorted(done)], title, split, sample, test_time, tune, len(rows))


def _table(zoo: Zoo, rows: list[dict], title: str, split: str, sample, test_time: bool, tune: bool, total: int) -> dict:
    columns = zoo.task_names + ["Avg"]
    _mark(rows, columns)
    _add_gains(rows)
    return {"title": title or f"Test accuracy (%) on zoo {zoo.name}", "columns": columns, "rows": rows,
            "split": split, "sample": sample, "test_time": test_time, "tuned": tune, "complete": len(rows) == total,
            "total_rows": total}


def chosen_text(row: dict) -> str:
    """A row's values chosen on validation, as the tables print them ("λ 0.4, τ 0.5%"; "" when none)."""
    chosen = row.get("chosen") or {}
    parts = []
    if "lam" in chosen:
        parts.append(f"λ {chosen['lam']:g}")
    if "lines_beta" in chosen:
        parts.append(f"β {chosen['lines_beta']:g}")
    if "tau" in chosen:
        parts.append(f"τ {100 * chosen['tau']:g}%")
    return ", ".join(parts)


def _tuned(table: dict) -> bool:
    return bool(table.get("tuned")) and any(row.get("chosen") for row in table["rows"])


def _chose_beta(table: dict) -> bool:
    """Whether a row chose LiNeS' β on validation (in place of λ)."""
    return any("lines_beta" in (row.get("chosen") or {}) for row in table["rows"])


CHOSEN_COLUMN = "chosen on val"


def held_out_split(zoo: Zoo, held_out: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(held-out tasks, merged tasks) of Table 4: ``held_out`` (default: the last two) and the rest."""
    held_out = list(held_out) if held_out is not None else zoo.task_names[-2:]
    seen = [t for t in zoo.task_names if t not in held_out]
    if not seen or not held_out:
        raise TatrError("generalization needs at least one merged and one held-out task")
    zoo.check_tasks(held_out)
    return held_out, seen


def generalization_table(zoo: Zoo, held_out: Sequence[str] | None = None, *, methods: Sequence[tuple] | None = None,
                         split: str = "test", sample: int | None = None, evaluator: Evaluator | None = None,
                         progress: Progress = no_progress) -> dict:
    """Table 4: merge all tasks but ``held_out`` (default: the last two), evaluate every task.

    Columns: the merged tasks and their average, then the held-out tasks and their average.
    """
    names = zoo.task_names
    held_out, seen = held_out_split(zoo, held_out)
    methods = methods or [("Task Arithmetic", "task_arithmetic", {}), ("TATR", "tatr", {})]
    idx = [names.index(t) for t in seen]
    shared, points, params_of = Shared(), [], []
    for label, method, kw in methods:
        params = method_params(method, **kw)
        params_of.append(params)
        points += subset_points(zoo, method, params, [idx], [f"{label} without {', '.join(held_out)}"], split, sample,
                                0, shared)
    run = run_points(zoo, points, shared=shared, evaluator=evaluator, progress=progress, what="generalization merges")
    run.require_all("generalization merges")
    rows = []
    for (label, method, _), params, res in zip(methods, params_of, run.results):
        values = {t: 100 * res[t]["accuracy"] for t in names}
        values["Avg (merged)"] = sum(values[t] for t in seen) / len(seen)
        values["Avg (held out)"] = sum(values[t] for t in held_out) / len(held_out)
        rows.append({"label": label, "group": "", "method": method, "params": params, "values": values})
    columns = seen + ["Avg (merged)"] + held_out + ["Avg (held out)"]
    _mark(rows, columns)
    _add_gains(rows)
    return {"title": f"Generalization to held-out tasks ({', '.join(held_out)}) on zoo {zoo.name}",
            "columns": columns, "rows": rows, "held_out": held_out, "split": split, "sample": sample}


TABLES = {"methods": "Methods (Table 1)", "sensitivity-variants": "Sensitivity variants (Table 6)",
          "generalization": "Generalization to held-out tasks (Table 4)"}


def rows_digest(rows: Sequence[tuple]) -> str:
    """What a table's rows are (labels, methods, parameters, each method's revision), as a short digest: a
    method registered or revised since a table was cached gives the table a new key."""
    return digest([(label, method, kw, REVISIONS.get(f"method {method}")) for label, _, method, kw in rows])


def table_spec(zoo: Zoo, kind: str, *, test_time: bool = True, tune: bool = False,
               held_out: Sequence[str] | None = None, split: str = "test", sample: int | None = None) -> Spec:
    """One of the paper's tables (:data:`TABLES`) on ``zoo``, as one request: its rows are cached one by one
    (each a method evaluation), the spec keys the whole (a page's job, the CLI's table)."""
    if kind not in TABLES:
        raise TatrError(f"unknown table '{kind}'; choose one of {', '.join(TABLES)}")
    args: dict = {"table": kind, "split": split, "sample": sample}
    if kind == "methods":
        args |= {"test_time": bool(test_time), "tune": bool(tune), "rows": rows_digest(METHOD_ROWS)}
    elif kind == "sensitivity-variants":
        args |= {"tune": bool(tune), "rows": rows_digest(SENSITIVITY_ROWS)}
    else:
        args |= {"held_out": held_out_split(zoo, held_out)[0]}
    return Spec.of("table", zoo.key, args)


@register("table", "method table", has_keys("title", "columns", "rows"), lambda args: TABLES[args["table"]])
def _table_request(zoo: Zoo, args: dict, ctx: Context) -> dict:
    common = {"split": args["split"], "sample": args["sample"], "evaluator": ctx.evaluator, "progress": ctx.progress}
    if args["table"] == "methods":
        return method_table(zoo, METHOD_ROWS, test_time=args["test_time"], tune=args["tune"], on_update=ctx.on_update,
                            **common)
    if args["table"] == "sensitivity-variants":
        return method_table(zoo, SENSITIVITY_ROWS, tune=args["tune"], on_update=ctx.on_update,
                            title=f"TATR with each sensitivity (Table 6): test accuracy (%) on zoo {zoo.name}", **common)
    return generalization_table(zoo, args["held_out"], **common)


# ------------------------------------------------------------------------------ renderers
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in str(text))


def _cell(row: dict, col: str) -> str:
    return f"{row['values'][col]:.1f}"


def _marked_cells(row: dict, cols: list[str], best: str, second: str, plain: str = "{}") -> list[str]:
    """A row's values, each in the format of its mark: ``best`` (bold), ``second`` (underlined) or ``plain``."""
    return [(best if row["rank"].get(c) == 1 else second if row["rank"].get(c) == 2 else plain).format(_cell(row, c))
            for c in cols]


def _gain_text(row: dict) -> str:
    return "" if row.get("gain") is None else f"{round(row['gain'], 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def _has_gains(table: dict) -> bool:
    return any(row.get("gain") is not None for row in table["rows"])


def _groups(table: dict):
    """(group label or None, rows): consecutive rows of one group together."""
    out: list[tuple[str | None, list[dict]]] = []
    for row in table["rows"]:
        if not out or out[-1][0] != (row["group"] or None):
            out.append((row["group"] or None, []))
        out[-1][1].append(row)
    return out


def latex_caption(table: dict) -> str:
    """The caption a paper's table carries: what is measured, the protocol that chose λ and τ, and what the marks
    mean (LaTeX, escaped)."""
    split = table.get("split", "test")
    measured = f"{latex_escape(table['title'])}, on the {latex_escape(split)} split"
    if table.get("sample"):
        measured += f" (a sample of {int(table['sample'])} images per task)"
    if _tuned(table):
        protocol = (r"$\lambda$ (or LiNeS' $\beta$) and the TATR plug-in's $\tau$ chosen per row on the validation "
                    "split, as the last column gives them")
    else:
        protocol = "every row at its method's defaults, which its label gives"
    if table.get("test_time"):
        protocol += "; test-time methods adapt on unlabelled test images"
    marks = r"\textbf{Bold}: the best in each group of rows; \underline{underlined}: the second"
    gains = r"; gain: the plug-in row's average minus its base row's" if _has_gains(table) else ""
    return f"{measured}. {protocol[0].upper() + protocol[1:]}. {marks}{gains}."


def latex_label(table: dict) -> str:
    """A LaTeX label key from the table's title: ``tab:`` and its words joined by dashes."""
    words = re.findall(r"[a-z0-9]+", str(table["title"]).lower())
    return "tab:" + "-".join(words[:8])


def to_latex(table: dict) -> str:
    """A booktabs ``table`` environment in the paper's layout: labelled row groups, each "& TATR" row
    under its base with its gain, best bold and second underlined within a group."""
    cols = table["columns"]
    tuned, gains, stored = _tuned(table), _has_gains(table), _has_stored(table)
    extra = (["gain"] if gains else []) + ([r"stored (\%)"] if stored else []) + \
        ([(r"$\lambda$ or $\beta$" if _chose_beta(table) else r"$\lambda$") + r", $\tau$ (val)"] if tuned else [])
    width = 1 + len(cols) + len(extra)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{" + latex_caption(table) + "}", r"\label{" + latex_label(table) + "}",
             r"\begin{tabular}{l" + "r" * len(cols) + "r" * gains + "r" * stored + "l" * tuned + "}", r"\toprule",
             "Method & " + " & ".join([latex_escape(c) for c in cols] + extra) + r" \\"]
    for group, rows in _groups(table):
        lines.append(r"\midrule")
        if group:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(group)}}}}} \\")
        for row in rows:
            cells = _marked_cells(row, cols, r"\textbf{{{}}}", r"\underline{{{}}}")
            if gains:
                cells.append(_gain_text(row))
            if stored:
                cells.append(_stored_text(row))
            if tuned:
                cells.append(chosen_text(row).replace("λ", "$\\lambda$").replace("τ", "$\\tau$").replace("β", "$\\beta$")
                             .replace("%", r"\%"))
            label = latex_escape(row["label"])
            lines.append((r"\quad " if row.get("base") else "") + label + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(table: dict) -> str:
    cols = table["columns"]
    tuned, gains, stored = _tuned(table), _has_gains(table), _has_stored(table)
    extra = (["gain"] if gains else []) + ([STORED_COLUMN] if stored else []) + ([CHOSEN_COLUMN] if tuned else [])
    lines = [f"**{table['title']}**", "", "| Method | " + " | ".join(cols + extra) + " |",
             "|---|" + "---:|" * (len(cols) + gains + stored) + "---|" * tuned]
    for group, rows in _groups(table):
        if group:
            lines.append(f"| *{group}* |" + " |" * (len(cols) + len(extra)))
        for row in rows:
            cells = _marked_cells(row, cols, "**{}**", "<u>{}</u>")
            cells += ([_gain_text(row)] if gains else []) + ([_stored_text(row)] if stored else []) + \
                ([chosen_text(row)] if tuned else [])
            label = ("&nbsp;&nbsp;" if row.get("base") else "") + row["label"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    tuned, gains, stored = _tuned(table), _has_gains(table), _has_stored(table)
    beta = tuned and _chose_beta(table)
    w.writerow(["method", "group", *table["columns"], *(["gain", "base"] if gains else []),
                *(["stored (%)"] if stored else []), *(["lam (val)", "tau (val)"] if tuned else []),
                *(["lines_beta (val)"] if beta else [])])
    for row in table["rows"]:
        chosen = row.get("chosen") or {}
        w.writerow([row["label"], row["group"], *(f"{row['values'][c]:.2f}" for c in table["columns"]),
                    *([f"{row['gain']:.2f}" if row.get("gain") is not None else "", row.get("base") or ""]
                      if gains else []),
                    *([_stored_text(row)] if stored else []),
                    *([chosen.get("lam", ""), chosen.get("tau", "")] if tuned else []),
                    *([chosen.get("lines_beta", "")] if beta else [])])
    return buf.getvalue()


def to_html(table: dict) -> str:
    """The table as the dashboard shows it: the paper's layout in HTML (labelled groups, "& TATR" rows
    indented under their base with the gain, best bold and second underlined within a group), in a
    horizontally scrolling box so that no column is cut off."""
    from html import escape

    cols = table["columns"]
    tuned, gains, stored = _tuned(table), _has_gains(table), _has_stored(table)
    extra = (["gain"] if gains else []) + ([STORED_COLUMN] if stored else []) + ([CHOSEN_COLUMN] if tuned else [])
    width = 1 + len(cols) + len(extra)
    head = "".join(f"<th>{escape(c)}</th>" for c in ["Method", *cols, *extra])
    body = []
    for group, rows in _groups(table):
        if group:
            body.append(f'<tr class="group"><td colspan="{width}">{escape(group)}</td></tr>')
        for row in rows:
            cells = _marked_cells(row, cols, "<td><b>{}</b></td>", "<td><u>{}</u></td>", "<td>{}</td>")
            if gains:
                gain = row.get("gain")
                colour = "" if gain is None else ' style="color:#1a7f37"' if gain > 0 else ' style="color:#b42318"' \
                    if gain < 0 else ""
                cells.append(f"<td{colour}>{_gain_text(row)}</td>")
            if stored:
                cells.append(f"<td>{_stored_text(row)}</td>")
            if tuned:
                cells.append(f'<td class="text">{escape(chosen_text(row))}</td>')
            indent = ' class="plugin"' if row.get("base") else ""
            body.append(f"<tr><th{indent}>{escape(row['label'])}</th>{''.join(cells)}</tr>")
    style = ("<style>.tatr-table{overflow-x:auto}.tatr-table table{border-collapse:collapse;font-size:14px;"
             "color:inherit;white-space:nowrap}.tatr-table th,.tatr-table td{padding:3px 10px;text-align:right;"
             "border:none}.tatr-table thead th{border-top:2px solid currentColor;border-bottom:1px solid currentColor}"
             ".tatr-table thead th:first-child,.tatr-table tbody th{text-align:left}.tatr-table tbody th{font-weight:normal}.tatr-table th.plugin{padding-left:26px}"
             ".tatr-table td.text{text-align:left}.tatr-table tr.group td{text-align:left;font-style:italic;"
             "border-top:1px solid currentColor;padding-top:6px}.tatr-table tbody tr:last-child>*"
             "{border-bottom:2px solid currentColor}</style>")
    return (f'{style}<div class="tatr-table"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


RENDERERS = {"latex": to_latex, "markdown": to_markdown, "csv": to_csv, "html": to_html}
