"""The paper's analyses for any zoo and any task-vector merge method.

Every analysis is a kind of :class:`tatr_core.keys.Spec` with one compute function in the registry
(:mod:`.registry`): a ``*_spec(zoo, ...)`` builder checks its parameters and gives the spec, and
:func:`run` gives its record (cached on disk under ``spec.key()``, which is also its background job's
key on the dashboard).  Each record is a JSON-able dict that the figure builders, the pages and the
CLI consume.

* :mod:`.evaluation` — one method evaluated (``method``: a table row, a sweep point).
* :mod:`.conflict` — knowledge conflicts C_{j|i} (Definition 1 / Eq. 3) (``conflict``).
* :mod:`.components` — Δ⁺ / Δ⁻ / Δ⊥ per task (``components``), Figure 2(a) (``merged-components``) and
  the loss landscape on their plane (Figure 2b/c, Appendix B) (``landscape``).
* :mod:`.layers` — Ω and per-task sensitivity per tensor and block, excluded fractions (Figure 4) (``layers``).
* :mod:`.tsv_view` — singular-value spectra and singular task interference (``tsv``).
* :mod:`.sweeps` — accuracy against τ, λ, the exemplar count or a declared parameter (Figure 3, Table 5);
  several curves as one page request (``sweeps``).
* :mod:`.tables` — Tables 1, 6 and 4 in the paper's layout (``table``); :mod:`.tuning` — λ and τ on validation.
* :mod:`.disentanglement` — the weight-disentanglement error ξ(α₁, α₂) of two tasks (Ortiz-Jiménez et al.,
  2023) (``disentanglement``).
* :mod:`.geometry` — norms, cosine similarities and overlap of the task vectors (``geometry``).
"""
from . import components, conflict, disentanglement, evaluation, geometry, layers, sweeps, tables, tsv_view  # noqa: F401  (they register)
from .registry import ANALYSES, Context, cost_units, label, run

__all__ = ["ANALYSES", "Context", "cost_units", "label", "run"]
