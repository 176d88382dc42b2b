"""Compare Methods: the paper's tables on this zoo — Table 1 (methods), Table 6 (sensitivity
variants), Table 4 (generalization to held-out tasks) — best bold, second underlined; LaTeX / CSV."""
import streamlit as st

from tatr_core.analysis.tables import RENDERERS, table_spec, to_html
from tatr_core.ui.controls import control
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis
from tatr_core.ui.session import current_zoo

st.title("Compare Methods")
st.caption("Test accuracy (%) of every row's method on each task, computed on this zoo (cached after the first "
           "run), in the layout of the paper's tables.")

with friendly_errors():
    zoo, evaluator = current_zoo()

TABLES = {"methods": "Table 1: merging methods and TATR", "sensitivity": "Table 6: sensitivity variants",
          "generalization": "Table 4: generalization to held-out tasks"}
KINDS = {"methods": "methods", "sensitivity": "sensitivity-variants", "generalization": "generalization"}
with st.sidebar:
    which = st.radio("table", list(TABLES), key=control("cm-table", "methods", TABLES), format_func=TABLES.get)
    if which == "methods":
        test_time = st.checkbox("add the test-time training rows", key=control("cm-test-time", False),
                                help="AdaMerging (task- and layer-wise, ++) and Surgery, plain and with TATR, train on "
                                     "unlabelled test images: about a minute per row on a 2-core laptop the first "
                                     "time (cached afterwards). The other rows take seconds.")
    if which in ("methods", "sensitivity"):
        chooser = {"fixed": "fixed: each method's defaults, as its row's label says",
                   "val": "chosen per row on the validation split (about 10 times the work)"}
        choose = st.radio("λ and τ", list(chooser), key=control("cm-choose", "fixed", chooser), format_func=chooser.get,
                          help="The papers choose λ (and TATR's τ) per method on validation data, then report test "
                               "accuracy: about 10 validation evaluations per method and 26 per TATR row, cached. "
                               "Fixed uses every method's default.")
    if which == "generalization":
        held_out = st.multiselect("held-out tasks", zoo.task_names,
                                  key=control("cm-held-out", zoo.task_names[-2:], zoo.task_names))

def partial(table: dict) -> None:
    """The rows finished so far, in place of the table while the rest is computed."""
    st.subheader(table["title"])
    st.caption(f"{len(table['rows'])} of {table['total_rows']} rows so far; the rest fill in as they finish "
               "(marks are among the rows shown).")
    st.html(to_html(table))


with friendly_errors():
    spec = table_spec(zoo, KINDS[which], test_time=which == "methods" and test_time,
                      tune=which != "generalization" and choose == "val",
                      held_out=held_out if which == "generalization" else None)
    table = analysis(zoo, spec, evaluator, label=TABLES[which], show_partial=partial)
if table is None:
    st.stop()

st.subheader(table["title"])
if which == "methods" and not test_time:
    st.caption("Training-free rows only: tick **add the test-time training rows** in the sidebar for AdaMerging "
               "and Surgery (they train for about a minute per row on the first run).")
if table.get("tuned"):
    st.caption("λ (and τ for the TATR rows) chosen per row on the validation split; the last column gives the values. "
               "Accuracies are on the test split at those values.")
st.html(to_html(table))
notes = ["best of each column **bold**, second underlined, within each group (the training-free merges and the "
         "test-time ones are compared among themselves, as in the paper)"]
if any(row.get("gain") is not None for row in table["rows"]):
    notes.append("indented rows add TATR to the method above them; *gain* is the change in its average accuracy")
st.caption("; ".join(notes) + ".")

cols = st.columns(6)
for col, (fmt, ext, mime) in zip(cols, [("latex", "tex", "text/x-tex"), ("csv", "csv", "text/csv"),
                                        ("markdown", "md", "text/markdown")]):
    col.download_button(fmt.upper() if fmt != "markdown" else "Markdown", data=RENDERERS[fmt](table),
                        file_name=f"table-{which}-{zoo.name}.{ext}", mime=mime, key=f"dl-table-{fmt}",
                        icon=":material/download:")
with st.expander("LaTeX source"):
    st.code(RENDERERS["latex"](table), language="latex")
