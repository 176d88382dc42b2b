"""The dashboard's page map: ``app.py`` routes with it (``st.navigation``) and the home page draws it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    section: str
    summary: str


PAGES = [
    PageInfo("app_pages/home.py", "Home", ":material/home:", "Start", "the zoo, its tasks and this map"),
    PageInfo("app_pages/learn.py", "Learn", ":material/school:", "Start",
             "a guided tour: task vectors, knowledge conflict, the trust region, with live examples"),
    PageInfo("app_pages/merge_lab.py", "Merge Lab", ":material/science:", "Merge",
             "merge with any method, see per-task accuracy, download the checkpoint and its recipe"),
    PageInfo("app_pages/compare_methods.py", "Compare Methods", ":material/table_chart:", "Merge",
             "the paper's tables (1, 4, 6) on this zoo, best bold and second underlined; LaTeX / CSV"),
    PageInfo("app_pages/sweeps.py", "Sweeps", ":material/show_chart:", "Merge",
             "accuracy against τ, λ or the exemplar count, several methods overlaid, live"),
    PageInfo("app_pages/knowledge_conflicts.py", "Knowledge Conflicts", ":material/compare_arrows:", "Analyse",
             "C(j|i) of two methods side by side, in loss or accuracy; the tasks' singular-vector interference"),
    PageInfo("app_pages/trust_region.py", "Trust Region", ":material/shield:", "Analyse",
             "per-layer sensitivity, where the trust region cuts, the distribution of Ω"),
    PageInfo("app_pages/loss_landscape.py", "Loss Landscape", ":material/landscape:", "Analyse",
             "loss contours on the plane through θ_pre+Δ⊥, θ_pre+Δ⁺ and θ_pre+Δ⁻"),
]
HOME = PAGES[0].path
