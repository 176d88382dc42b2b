"""What the Learn page says, generated from the records beside it: every number in a sentence is read from
a record, and a sentence that states one of the paper's observations is only said when this zoo shows it
(otherwise it says plainly that this zoo does not).

Each function takes the records a step draws and returns Markdown; tests compare every number in it with
the record it came from (tests/test_app.py).
"""
from __future__ import annotations

#: the TATR paper's Table 1 on CLIP ViT-B/32 (8 tasks): zero-shot, fine-tuned, Task Arithmetic (λ on validation)
PAPER_ZERO_SHOT, PAPER_INDIVIDUAL, PAPER_TASK_ARITHMETIC = 48.0, 90.5, 69.1
#: below this |cosine| two task vectors count as nearly orthogonal
NEARLY_ORTHOGONAL = 0.1


def gap_share(merged: float, zero_shot: float, individual: float) -> float | None:
    """The share (%) of the zero-shot → fine-tuned gap a merged model recovers (None without a gap)."""
    gap = individual - zero_shot
    return None if abs(gap) < 1e-12 else 100 * (merged - zero_shot) / gap


PAPER_SHARE = gap_share(PAPER_TASK_ARITHMETIC, PAPER_ZERO_SHOT, PAPER_INDIVIDUAL)


def step1(geometry: dict) -> str:
    tasks, cos = geometry["tasks"], geometry["cosine"]
    pairs = [(abs(cos[i][j]), tasks[i], tasks[j]) for i in range(len(tasks)) for j in range(i + 1, len(tasks))]
    head = (f"Fine-tuning the pretrained CLIP image encoder θ_pre on task *k* gives θ_k. The difference Δ_k is a "
            f"vector with one entry per parameter: here **{geometry['N']:,}** entries, for each of the "
            f"**{len(tasks)}** tasks. On the right: the cosine similarity of every pair. ")
    if not pairs:
        return head
    largest = max(pairs)
    mean = sum(p[0] for p in pairs) / len(pairs)
    text = (f"The largest |cosine| is **{largest[0]:.3f}** ({largest[1]}, {largest[2]}), the mean **{mean:.3f}**. ")
    if largest[0] < NEARLY_ORTHOGONAL:
        text += ("The vectors are nearly orthogonal: adding one barely projects onto another. That alone does not "
                 "make the sum work; steps 2 to 4 show what adding them does to each task.")
    else:
        text += (f"Not every pair is nearly orthogonal here (|cosine| ≥ {NEARLY_ORTHOGONAL:g}): those tasks' vectors "
                 "share directions, and adding one moves the other.")
    return head + text


def step2(ta: dict, zs: dict, ind: dict, lam: float) -> str:
    a, z, i = (100 * r["average_accuracy"] for r in (ta, zs, ind))
    share = gap_share(a, z, i)
    text = (f"At λ = {lam:g}, Task Arithmetic averages **{a:.1f}%**: {abs(a - z):.1f} points "
            f"{'above' if a >= z else 'below'} zero-shot ({z:.1f}%), against {i:.1f}% for the fine-tuned models. ")
    if share is None:
        return text + "Fine-tuning did not change the average here, so there is no gap to recover."
    text += f"It recovers **{share:.0f}%** of the zero-shot → fine-tuned gap. "
    paper = (f"On CLIP ViT-B/32 the TATR paper's Table 1 has Task Arithmetic recovering {PAPER_SHARE:.0f}% "
             f"({PAPER_ZERO_SHOT:g} → {PAPER_TASK_ARITHMETIC:g} of {PAPER_INDIVIDUAL:g}).")
    if share < 0:
        return text + ("**This zoo does not show what real CLIP zoos show**: adding the task vectors leaves the "
                       "average below zero-shot. " + paper)
    if share < PAPER_SHARE / 2:
        return text + f"That is far less than on real CLIP zoos. {paper}"
    return text + paper


def step3(conflict: dict) -> str:
    pairs = [(conflict["accuracy"][j][i], ti, tj) for j, tj in enumerate(conflict["tasks"])
             for i, ti in enumerate(conflict["tasks"]) if i != j and conflict["accuracy"][j][i] is not None]
    text = ("Merge all tasks, then merge all but task *i*: the difference in task *j*'s loss (or accuracy) is the "
            "conflict of *i* on *j*. ")
    if pairs:
        worst = max(pairs)
        if worst[0] > 0:
            text += (f"On this zoo the largest is **{worst[1]} → {worst[2]}**: adding {worst[1]}'s vector costs "
                     f"{worst[2]} **{100 * worst[0]:.1f} accuracy points**. ")
        else:
            text += "On this zoo no task's accuracy drops when another task is added. "
    positive = sum(1 for p in pairs if p[0] > 0)
    text += (f"{positive} of the {len(pairs)} entries are a loss of accuracy. Summed over all K(K−1) entries (the "
             f"negative ones, where adding a task helps, included), C is **{conflict['total_loss']:+.2f} nats** of "
             f"loss and **{100 * conflict['total_accuracy']:+.1f} accuracy points**; the heatmap shows the "
             "accuracy form.")
    return text


def step4(summary: dict) -> str:
    K = len(summary["tasks"])
    neg, pos, orth = summary["negative"], summary["positive"], summary["orthogonal"]
    worst = summary["negative_worst"]
    text = (f"On this zoo: Δ⁺ raised task *j*'s loss on **{len(pos['raised_loss'])} of {K}** tasks (mean "
            f"{pos['mean_loss_change']:+.2f} nats, {pos['mean_accuracy_change']:+.1f} accuracy points). "
            f"Δ⁻, which the first-order picture says should lower it, raised it on **{len(neg['raised_loss'])} of "
            f"{K}** (mean {neg['mean_loss_change']:+.2f} nats, {neg['mean_accuracy_change']:+.1f} points). ")
    raised = len(neg["raised_loss"])
    if max(summary[c]["mean_abs_loss_change"] for c in ("negative", "positive", "orthogonal")) == 0:
        return text + "At λ = 0 every part leaves θ_pre where it is: raise λ to see them differ."
    if raised * 2 > K and neg["mean_loss_change"] > 0:
        text += (f"So here the step along a descent direction mostly overshoots the minimum it points to "
                 f"({worst['task']}: {worst['before']:.2f} → {worst['after']:.2f} nats): the task vectors are "
                 "large. This is the paper's observation (Section 4), and why TATR does not simply keep Δ⁻. ")
    elif raised:
        text += (f"On average Δ⁻ lowered the loss, as the first-order picture predicts, but it overshot on "
                 f"{raised} task(s) ({worst['task']}: {worst['before']:.2f} → {worst['after']:.2f} nats). The paper "
                 "sees Δ⁻ overshoot on most tasks (Section 4); **this zoo shows it only on those**. ")
    else:
        text += ("Δ⁻ lowered the loss on every task, as the first-order picture predicts: **this zoo does not show "
                 "the overshoot the paper describes** (Section 4) at this λ and Δ⊥ share. ")
    smallest = orth["mean_abs_loss_change"] <= min(neg["mean_abs_loss_change"], pos["mean_abs_loss_change"])
    text += (f"Δ⊥ changed the loss by {orth['mean_abs_loss_change']:.2f} nats on average in either direction "
             f"({orth['mean_accuracy_change']:+.1f} points), against {neg['mean_abs_loss_change']:.2f} for Δ⁻ and "
             f"{pos['mean_abs_loss_change']:.2f} for Δ⁺: "
             + ("the smallest change, as the paper finds." if smallest else
                "**not** the smallest here, unlike the paper's finding."))
    return text


def figure2a(merged: dict) -> str:
    """What Figure 2(a)'s merged models show here, beside the paper's reading of it (θ^neg collapses, θ^orth is
    the safe part)."""
    m = merged["models"]
    if not all(k in m for k in ("pretrained", "negative", "orthogonal", "positive")):
        return ""
    pre, neg, orth, pos = (100 * m[k]["average_accuracy"] for k in ("pretrained", "negative", "orthogonal", "positive"))
    text = (f"Here θ^neg averages {neg:.1f}%, θ^orth {orth:.1f}% and θ^pos {pos:.1f}%, against {pre:.1f}% for "
            "θ_pre. ")
    if neg < pre - 5:
        text += ("θ^neg falls well below θ_pre: the collapse the paper describes (Δ⁻ overshoots the optimum it "
                 "points to)")
    else:
        text += ("**θ^neg does not collapse on this zoo** (the paper finds it far below θ_pre: Δ⁻ overshoots the "
                 "optimum it points to)")
    text += "; θ^orth is " + ("the best of the three, the safe part the paper finds." if orth >= max(neg, pos) else
                             "**not** the best of the three here, unlike the paper's finding.")
    return text


def orderings(stored: dict) -> str:
    """What step 6 says above its table of checks (:func:`tatr_core.analysis.orderings.stored_orderings`)."""
    checks = stored["checks"]
    held = [c for c in checks if c["holds"]]
    text = (f"Each line is a finding of the papers on CLIP ViT-B/32, checked on this zoo's test accuracies with λ and "
            f"τ chosen on the validation split (`{stored['script']}`, {stored['date']}). **{len(held)} of "
            f"{len(checks)} hold here.** ")
    missing = [c["what"] for c in checks if not c["holds"]]
    if missing:
        text += "Where a finding does not hold, this zoo is not a small CLIP in that respect: " + "; ".join(missing) + "."
    else:
        text += "This zoo reproduces every one of them."
    return text
