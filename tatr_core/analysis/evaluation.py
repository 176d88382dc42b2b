"""One method evaluated on a zoo, as an analysis: the spec behind :func:`tatr_core.runs.evaluate_method`,
for pages that run it as a background job (the record and its key are the same as the CLI's ``eval``)."""
from __future__ import annotations

from typing import Sequence

from ..keys import Spec
from ..runs import is_method_record, method_params, method_record, method_spec
from ..zoo import Zoo
from .registry import Context, register


def evaluation_spec(zoo: Zoo, method: str, *, split: str = "test", sample: int | None = None, seed: int = 0,
                    tasks: Sequence[str] | None = None, **params) -> Spec:
    """The spec of ``evaluate_method(zoo, method, **params)`` (its parameters checked and completed)."""
    resolved = method_params(method, seed=seed, **params)
    return method_spec(zoo, method, resolved, split, sample, seed, zoo.check_tasks(tasks))


@register("method", "evaluation", is_method_record, lambda args: f"{args['method']}: merging and evaluating")
def _evaluation(zoo: Zoo, args: dict, ctx: Context) -> dict:
    return method_record(zoo, args["method"], args["params"], split=args["split"], sample=args["sample"],
                         seed=args["seed"] or 0, tasks=args["tasks"], evaluator=ctx.evaluator, progress=ctx.progress)
