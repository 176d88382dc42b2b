"""The paper's analyses for any zoo and any task-vector merge method.

Each analysis returns a JSON-able dict (cached on disk, content-addressed by zoo, method,
parameters, split and sample) that the figure builders, the pages and the CLI consume.

* :func:`conflict.conflict_matrix` — knowledge conflicts C_{j|i} (Definition 1 / Eq. 3).
* :func:`components.component_accuracy` — Δ⁺ / Δ⁻ / Δ⊥ of the other tasks' vector (Figure 2a).
* :func:`components.loss_landscape` — losses on the Δ⊥ / Δ⁺ / Δ⁻ plane (Figure 2b/c, Appendix B).
* :func:`layers.layer_sensitivity` — Ω and per-task sensitivity per tensor and block, excluded fractions (Figure 4).
* :func:`geometry.task_vector_geometry` — norms, cosine similarities and overlap of the task vectors.
* :func:`sweeps.sweep` — accuracy against τ, λ or exemplar count, streamed point by point (Figure 3, Table 5).
"""
