"""The zoo in use and its evaluator, and the run options of a page run.

The zoo is the sidebar's zoo box (``?zoo=`` in the URL), else the run options' default (``TATR_ZOO``,
else ``mini``); it is loaded once per process (``st.cache_resource``) with a visible progress bar on
first build.  The sidebar's precision control puts the page run's run options in force
(:func:`tatr_core.options.set_current`); the background jobs the page starts inherit them.
"""
from __future__ import annotations

import streamlit as st

from .. import options
from ..evaluate import Evaluator
from ..gradients import compute_task_gradients, gradients_spec
from ..options import PRECISIONS
from ..zoo import Zoo, load_zoo, mini
from .controls import control
from .jobs import jobs_inline, progress_bar


def default_zoo() -> str:
    return options.current().zoo


def zoo_spec() -> str:
    return st.session_state.get("zoo") or st.query_params.get("zoo") or default_zoo()


@st.cache_resource(show_spinner=False)
def _load(spec: str) -> Zoo:
    note = st.empty()
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


def current_zoo(warm: bool = True) -> tuple[Zoo, Evaluator]:
    """The zoo in use and its evaluator; the sidebar's precision control is put in force for this page run
    (and the jobs it starts), and the sidebar says where the tensors live and how they are evaluated.

    ``warm``: start the per-task gradients in the background now (:func:`warm_up`); the home page
    starts them itself once its own evaluations are done, so that they do not share the cores with them
    on a first start."""
    spec = zoo_spec()
    zoo = _load(spec)
    if warm:
        warm_up(zoo)
    evaluator = _evaluator(spec)
    environment = options.from_environment()
    precision = st.sidebar.radio(
        "precision", PRECISIONS, horizontal=True, key=control("precision", environment.precision, PRECISIONS),
        help="auto: bf16 autocast on a GPU when it predicts as float32 does (TF32 for float32 products), "
             "float32 on the CPU; fp32: float32 everywhere; bf16: bf16 autocast always. Conflict matrices and "
             "landscapes evaluate their losses in float32 unless bf16 is chosen. Results are cached per precision "
             "(auto apart). The CLI's --precision and TATR_PRECISION set the default.")
    options.set_current(options.current().replace(precision=precision))
    st.sidebar.caption(f"Evaluation: {evaluator.describe()}. Merges: {zoo.placement()}.")
    return zoo, evaluator


def warm_up(zoo: Zoo) -> None:
    """Start the per-task gradients at θ_pre (128 exemplars: what TATR, the landscapes, the components and
    the layer sensitivity need first) in the background as soon as a zoo is in use, so that the pages
    find them ready or half done (they take about half a minute on the mini zoo on two cores)."""
    if jobs_inline():
        return
    from ..jobs import RUNNER

    spec = gradients_spec(zoo, 128, 0)
    if not spec.path().exists():  # they land in the disk cache, where every analysis looks for them
        RUNNER.submit(spec.key(), "per-task gradients at θ_pre (128 exemplars)",
                      lambda job: compute_task_gradients(zoo, 128, 0, progress=job.progress))
