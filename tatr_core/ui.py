"""Streamlit helpers shared by the dashboard pages (the pages hold layout only).

* the page map (:data:`PAGES`), used by the router ``app.py`` and the home page;
* the zoo in use: the sidebar's zoo box (``?zoo=`` in the URL), else ``$TATR_ZOO``, else ``mini``;
  loaded once per process with ``st.cache_resource`` and a visible progress bar on first build;
* shared controls (:func:`control`): kept in session state across pages and mirrored in the
  URL query, so a view can be shared by its link;
* errors shown as a message with the fix and the details in an expander, never a traceback;
* progress bars and figure download buttons (PNG / SVG / PDF generated only when clicked, plus HTML).

Long computations report progress through Streamlit calls; changing any control reruns the page,
which stops the computation at its next progress update (results already finished stay cached).
"""
from __future__ import annotations

import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Collection

import streamlit as st

from .errors import TatrError, out_of_memory
from .evaluate import PRECISIONS, Evaluator, set_precision
from .zoo import Zoo, load_zoo


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    section: str
    summary: str


PAGES = [
    PageInfo("pages/home.py", "Home", ":material/home:", "Start", "the zoo, its tasks and this map"),
    PageInfo("pages/learn.py", "Learn", ":material/school:", "Start",
             "a guided tour: task vectors, knowledge conflict, the trust region, with live examples"),
    PageInfo("pages/merge_lab.py", "Merge Lab", ":material/science:", "Merge",
             "merge with any method, see per-task accuracy, download the checkpoint and its recipe"),
    PageInfo("pages/compare_methods.py", "Compare Methods", ":material/table_chart:", "Merge",
             "the paper's tables (1, 4, 6) on this zoo, best bold and second underlined; LaTeX / CSV"),
    PageInfo("pages/sweeps.py", "Sweeps", ":material/show_chart:", "Merge",
             "accuracy against τ, λ or the exemplar count, several methods overlaid, live"),
    PageInfo("pages/knowledge_conflicts.py", "Knowledge Conflicts", ":material/compare_arrows:", "Analyse",
             "C(j|i) of two methods side by side, in loss or accuracy; the tasks' singular-vector interference"),
    PageInfo("pages/trust_region.py", "Trust Region", ":material/shield:", "Analyse",
             "per-layer sensitivity, where the trust region cuts, the distribution of Ω"),
    PageInfo("pages/loss_landscape.py", "Loss Landscape", ":material/landscape:", "Analyse",
             "loss contours on the plane through θ_pre+Δ⊥, θ_pre+Δ⁺ and θ_pre+Δ⁻"),
]

TAU_CHOICES = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]  #: τ in % offered by the pages
EXEMPLAR_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128]
ORTHOGONAL_CHOICES = [0.0, 50.0, 80.0, 90.0, 95.0, 99.0]  #: Δ⊥ band in % of the non-zero entries offered by the pages


def orthogonal_fraction_control(key: str) -> float:
    """The Δ⊥ band (``--orthogonal-fraction``) as a select slider in %; returns the fraction."""
    pct = st.select_slider("Δ⊥: share of the entries (%)", ORTHOGONAL_CHOICES,
                           key=control(key, 90.0, ORTHOGONAL_CHOICES),
                           help="Δ⊥ is the paper's 'near-zero inner product': this share of the non-zero task-vector "
                                "entries with the smallest |g ⊙ Δ|. Δ⁺ and Δ⁻ are the rest, by sign. It largely sets "
                                "every component figure and landscape.")
    return pct / 100


def through_app() -> None:
    """First line of every page: make sure the page runs inside ``app.py``'s navigation.

    On a fresh server, when the first visit is a page's URL (a shared link), Streamlit runs that page's
    script on its own, in its old ``pages/``-folder mode (its class flag ``PagesManager.uses_pages_directory``
    is only cleared by a run of ``app.py`` that calls ``st.navigation``): no zoo box, no shared controls,
    no wide layout.  Clearing the flag and rerunning runs ``app.py``, which routes to the same page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def default_zoo() -> str:
    return os.environ.get("TATR_ZOO") or "mini"


def zoo_spec() -> str:
    return st.session_state.get("zoo") or st.query_params.get("zoo") or default_zoo()


# ------------------------------------------------------------------------------ shared controls
def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(raw)
        return raw.lower() in ("true", "1")
    if isinstance(default, (list, tuple)):
        return [_parse(part, default[0]) if default else part for part in raw.split(",") if part]
    return type(default)(raw)


def _unparse(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _valid(value: Any, valid: Collection | Callable[[Any], bool] | None) -> bool:
    if valid is None:
        return True
    if callable(valid):
        return bool(valid(value))
    if isinstance(value, list):
        return all(v in valid for v in value)
    return value in valid


def control(key: str, default: Any, valid: Collection | Callable[[Any], bool] | None = None) -> str:
    """Prepare the shared control ``key`` and return the key for the widget (created without a default).

    First use in a session: the value comes from ``?key=`` in the URL when it parses and is
    ``valid``, else ``default``.  Afterwards the session's value is kept (also across pages, see
    :func:`keep_controls`) and written back to the URL query.
    """
    if key not in st.session_state:
        value = default
        raw = st.query_params.get(key)
        if raw is not None:
            try:
                parsed = _parse(raw, default)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None and _valid(parsed, valid):
                value = parsed
        st.session_state[key] = value
    elif not _valid(st.session_state[key], valid):
        st.session_state[key] = default
    st.session_state.setdefault("_controls", set()).add(key)
    st.query_params[key] = _unparse(st.session_state[key])
    return key


def parameter_widget(method: str, param) -> Any:
    """The sidebar widget of one declared parameter (:class:`tatr_core.merge.registry.Param`), kept and
    mirrored in the URL under ``<name>-<method>``; returns its value."""
    key, label, help_ = f"{param.name}-{method}", param.label or param.name, param.help
    if param.kind is str:
        return st.radio(label, list(param.choices), key=control(key, param.default, param.choices), help=help_,
                        horizontal=True)
    if param.grid:
        values = sorted(set(param.grid) | {param.default})
        return st.select_slider(label, values, key=control(key, param.default, values), help=help_)
    if param.kind is float:
        step = 0.05
        low = (param.low if param.low is not None else 0.0) + (step if param.low_open else 0.0)
        high = param.high if param.high is not None else max(1.5, 2 * float(param.default))
        return st.slider(label, float(low), float(high), step=step, help=help_,
                         key=control(key, float(param.default), lambda v: low <= v <= high))
    low = int(param.low) if param.low is not None else None
    high = int(param.high) if param.high is not None else None
    return int(st.number_input(label, min_value=low, max_value=high, step=1, help=help_,
                               key=control(key, int(param.default),
                                           lambda v: (low is None or v >= low) and (high is None or v <= high))))


def method_controls(method: str, spec, exemplars_needed: bool) -> dict:
    """Sidebar widgets generated from a method's declared parameters; returns them as keyword arguments.
    The exemplar count is one shared control (it also serves the gradients behind the trust region)."""
    kw = {p.name: parameter_widget(method, p) for p in spec.parameters if p.name not in ("exemplars", "seed")}
    if "exemplars" in spec.declared or exemplars_needed:
        default = spec.declared["exemplars"].default if "exemplars" in spec.declared else 128
        kw["exemplars"] = st.select_slider("exemplars per task", EXEMPLAR_CHOICES,
                                           key=control("exemplars", default, EXEMPLAR_CHOICES),
                                           help="training images per task behind the gradients, Fishers and Grams")
    return kw


def keep_controls() -> None:
    """Keep every shared control's value while its page is not shown (Streamlit drops the state of
    widgets that are not rendered; re-assigning it through the Session State API keeps it)."""
    for key in st.session_state.get("_controls", ()):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# ------------------------------------------------------------------------------ zoo and evaluator
@st.cache_resource(show_spinner=False)
def _load(spec: str) -> Zoo:
    note = st.empty()

    from .zoo import mini

    shipped = spec in mini.PRESETS and mini.shipped_folder(spec) is not None
    first = (f"Installing zoo **{spec}** for the first time from the build shipped with the code: its task "
             "images are generated here (seconds, once; cached for every later start)." if shipped else
             f"Building zoo **{spec}** for the first time: pretraining and fine-tuning take minutes on a 2-core "
             "laptop, once; the result is cached for every later start.")

    def building(progress):
        def report(fraction: float, message: str) -> None:
            if fraction < 1.0:  # only an install or a build reports progress
                note.info(first, icon=":material/build:")
            progress(fraction, message)
        return report

    try:
        with progress_bar(f"loading zoo {spec}") as progress:
            return load_zoo(spec, building(progress))
    finally:
        note.empty()


@st.cache_resource(show_spinner=False)
def _evaluator(spec: str) -> Evaluator:
    return Evaluator(_load(spec))


@st.cache_data(max_entries=8, show_spinner=False)
def _geometry(zoo_key: str, _zoo: Zoo) -> dict:
    from .analysis.geometry import task_vector_geometry

    return task_vector_geometry(_zoo)


def zoo_geometry(zoo: Zoo) -> dict:
    """The task vectors' norms, cosines and overlap (:func:`analysis.geometry.task_vector_geometry`),
    computed once per zoo content (its key) rather than on every rerun of the page."""
    return _geometry(zoo.key, zoo)


def current_zoo() -> tuple[Zoo, Evaluator]:
    """The zoo in use and its evaluator; the sidebar's precision control is applied to this page run
    (and to the jobs it starts), and the sidebar says where the tensors live and how they are evaluated."""
    spec = zoo_spec()
    zoo = _load(spec)
    _warm_up(zoo)
    evaluator = _evaluator(spec)
    precision = st.sidebar.radio(
        "precision", PRECISIONS, horizontal=True, key=control("precision", _default_precision(), PRECISIONS),
        help="auto: bf16 autocast on a GPU when it predicts as float32 does (TF32 for float32 products), "
             "float32 on the CPU; fp32: float32 everywhere; bf16: bf16 autocast always. Conflict matrices and "
             "landscapes evaluate their losses in float32 unless bf16 is chosen. Results are cached per precision "
             "(auto apart). The CLI's --precision and TATR_PRECISION set the default.")
    set_precision(precision)
    st.sidebar.caption(f"Evaluation: {evaluator.describe()}. Merges: {zoo.placement()}.")
    return zoo, evaluator


def _default_precision() -> str:
    asked = os.environ.get("TATR_PRECISION")
    return asked if asked in PRECISIONS else "auto"


def _warm_up(zoo: Zoo) -> None:
    """Start the per-task gradients at θ_pre (128 exemplars: what TATR, the landscapes, the components and
    the layer sensitivity need first) in the background as soon as a zoo is in use, so that the pages
    find them ready or half done (they take about half a minute on the mini zoo on two cores)."""
    if jobs_inline():
        return
    from .gradients import compute_task_gradients, gradients_path
    from .jobs import RUNNER

    def gradients(job) -> None:  # they land in the disk cache, where every analysis looks for them
        compute_task_gradients(zoo, 128, 0, progress=job.progress)

    if not gradients_path(zoo, 128, 0).exists():
        RUNNER.submit(job_key(zoo.key, "gradients", 128, 0), "per-task gradients at θ_pre (128 exemplars)", gradients)


# ------------------------------------------------------------------------------ errors, progress, downloads
@contextmanager
def friendly_errors():
    """Show user errors (and unexpected ones) as a message, with details in an expander, and stop the page."""
    try:
        yield
    except TatrError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # a bug: still no raw traceback on the page
        if type(exc).__module__.startswith("streamlit"):  # rerun / stop requests are control flow, not errors
            raise
        if out_of_memory(exc):
            st.error("Out of memory: lower the sample size, the exemplar count or the batch size in the sidebar, "
                     "or use a machine with more memory. Nothing was cached.")
            st.stop()
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")
        with st.expander("details"):
            st.code(traceback.format_exc())
        st.stop()


@contextmanager
def progress_bar(text: str):
    """A progress bar for a computation; yields the ``progress(fraction, message)`` callback, removed when done."""
    bar = st.progress(0.0, text=text)

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        yield progress
    finally:
        bar.empty()


def jobs_inline() -> bool:
    """``TATR_JOBS=inline`` computes on the page itself instead of in a background job (scripted page tests)."""
    return os.environ.get("TATR_JOBS", "") == "inline"


def background(key: str, label: str, fn: Callable, *, show_partial: Callable | None = None) -> Any:
    """The result of ``fn(job)`` run as a background job (:mod:`tatr_core.jobs`), or None while it runs.

    While it runs, the page shows ``show_partial(job.partial)`` when the job has published something,
    and a progress bar with a time estimate that refreshes itself every second; when the job is done,
    the page reruns and gets the result.  The job goes on if the user moves to another page, and the
    result is there on return (the same ``key`` finds the same job).  A failed job raises its error
    here, for :func:`friendly_errors`.
    """
    from .jobs import RUNNER

    if jobs_inline():
        from .jobs import Job

        job = Job(key, label)
        with progress_bar(label) as progress:
            job.progress = progress  # type: ignore[method-assign]
            return fn(job)
    from .jobs import JobCancelled

    job = RUNNER.submit(key, label, fn)
    if job.done and isinstance(job.error, JobCancelled):
        st.info(f"{label}: cancelled. The points it finished are cached; running it again starts from them.")
        if st.button("Run again", key=f"restart-{key}"):
            RUNNER.submit(key, label, fn, restart=True)
            st.rerun()
        return None
    if job.done:
        if job.error is not None:
            raise job.error
        return job.result
    _watch_job(key, show_partial)
    return None


def show_failed(record: dict) -> None:
    """Name the points of an analysis that failed on every try (Ray executor), if any."""
    failed = record.get("failed") or []
    if failed:
        st.warning(f"{len(failed)} point(s) failed on every try and are left blank: "
                   + "; ".join(f"{f['point']} ({f['error']})" for f in failed[:5])
                   + (" …" if len(failed) > 5 else ""))


def executor_caption() -> str:
    """Where the analyses' points run, for the sidebar (``TATR_EXECUTOR``, ``TATR_RAY_ADDRESS``)."""
    from .executors import get_executor

    try:
        return f"Points run on: {get_executor().describe()}"
    except TatrError as exc:
        return f"Executor setting ignored: {exc}"


@st.fragment(run_every=1.0)
def _watch_job(key: str, show_partial: Callable | None = None) -> None:
    """Refreshed every second on its own: the job's progress and what it has published so far."""
    from .jobs import RUNNER, format_seconds

    job = RUNNER.get(key)
    if job is None or job.done:
        st.rerun()  # the whole page, which now finds the result
        return
    RUNNER.touch(key)  # this page is waiting for it: it goes first
    if show_partial is not None and job.partial is not None:
        show_partial(job.partial)
    if job.started is None:
        ahead = [j.label for j in RUNNER.pending() if j.started is not None]
        text = f"{job.label}: queued" + (f" behind {ahead[0]}" if ahead else "")
    else:
        eta = job.eta()
        text = (f"{job.label}: {job.message} · {format_seconds(job.elapsed())} so far"
                + (f", about {format_seconds(eta)} left" if eta is not None else ""))
    st.progress(job.fraction, text=text + " · runs in the background: other pages stay usable")
    if st.button("Cancel", key=f"cancel-{key}", help="Stop this computation; the points it finished stay cached"):
        RUNNER.cancel(key)
        st.rerun()


def job_key(*parts: Any) -> str:
    """A background job's key from what it computes (zoo key, analysis, parameters) and the precision
    asked for (a job in float32 is not the job in bf16)."""
    from .cache import digest
    from .evaluate import precision_key

    precision = precision_key()
    return digest([str(p) if not isinstance(p, (dict, list, tuple, int, float, str, type(None))) else p
                   for p in parts] + ([precision] if precision else []))


def show_figure(fig, key: str, stem: str | None = None, container=None) -> None:
    """A figure on the page exactly as it exports, full width, with its Download menu (``stem``: the
    file name; None: no menu).  ``theme=None`` turns Streamlit's plotly theme off, which would restyle
    fonts and colours on screen only; the figures spell their colour scales in ``rgb()`` for the
    colour strings Streamlit rewrites whatever the theme (:func:`tatr_core.figures._rgb`)."""
    import plotly.graph_objects as go

    screen = go.Figure(fig)
    screen.update_layout(width=None)  # the column's width on screen; the export keeps the figure's own
    (container or st).plotly_chart(screen, width="stretch", key=key, theme=None)
    if stem is not None:
        figure_downloads(fig, stem)


def figure_downloads(fig, stem: str) -> None:
    """A "Download" menu under a figure: PNG / SVG / PDF (the CLI's exporter) and self-contained HTML.

    The files are made when asked for ("Prepare"), inside the menu's own fragment (the page does not
    rerun) and kept by the server (``st.cache_data``, shared by the sessions); each button then hands
    over bytes that are already there, so a click never waits on the exporter (building the file on
    click made a download hang now and then).
    """
    with st.popover("Download", icon=":material/download:"):
        _download_menu(fig.to_json(), stem)


_MIMES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html"}


@st.cache_data(max_entries=64, show_spinner=False)
def _export_all(spec: str, formats: tuple[str, ...]) -> dict[str, bytes]:
    import plotly.io as pio

    from .figures import figure_bytes

    fig = pio.from_json(spec)
    return {fmt: figure_bytes(fig, fmt) for fmt in formats}


@st.fragment
def _download_menu(spec: str, stem: str) -> None:
    from .cache import digest
    from .figures import _chromium

    formats = tuple((["png", "svg", "pdf"] if _chromium() else []) + ["html"])
    ready_key, wanted = f"dl-ready-{stem}", digest([spec, formats])
    if st.session_state.get(ready_key) != wanted:
        label = "Prepare PNG · SVG · PDF · HTML" if len(formats) > 1 else "Prepare HTML"
        if not st.button(label, key=f"dl-prepare-{stem}", width="stretch"):
            return
        with st.spinner("making the files…"):
            files = _export_all(spec, formats)
        st.session_state[ready_key] = wanted
    else:
        files = _export_all(spec, formats)  # made by an earlier request: from the server's cache
    for fmt in formats:
        st.download_button(fmt.upper(), data=files[fmt], file_name=f"{stem}.{fmt}", mime=_MIMES[fmt],
                           key=f"dl-{stem}-{fmt}", width="stretch", on_click="ignore")
    if len(formats) == 1:
        st.caption("PNG / SVG / PDF export needs chromium (apt-get install chromium); HTML works everywhere.")
