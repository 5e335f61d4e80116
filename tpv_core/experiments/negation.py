"""Task negation: does subtracting a task's prompt vector hurt that task and spare the others?

For every origin seed and every negated task t (with prompts of that seed):

* target rows: task t scored with P0 - coef * tau_t, beside the untuned origin P0 (``before``) and the
  tuned prompt P0 + tau_t (``tuned``). ``relative`` = after / before: below 1 means the negation made the
  origin worse at t than it was untuned.
* control rows, for every other task c: task c scored with P0 + tau_c - coef * tau_t, beside its own
  prompt P0 + tau_c (``before``). ``relative`` near 1 means the negation spared c.

The paper does not run this; it is the prompt-space version of task-arithmetic negation (Ilharco et al.,
2023), with a fixed coefficient instead of a search so that the numbers need no validation budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go

from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.experiments.common import (
    ExperimentResult,
    ProgressFn,
    ResultsLog,
    summarize,
    task_prompts,
    write_outputs,
)
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

NAME = "negation"


def run_negation(
    backbone: "Backbone",
    store: PromptStore,
    tasks: Sequence[str],
    out_dir: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    length: int | None = None,
    coef: float = 1.0,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> ExperimentResult:
    if not coef > 0:
        raise ValueError(f"the negation coefficient must be > 0 (it is subtracted), got {coef}")
    out = Path(out_dir)
    specs = [get_task(t, store.root) for t in tasks]
    if len(specs) < 2:
        raise ValueError("negation needs at least two tasks (one negated, one control)")
    log = ResultsLog(out / f"{NAME}_runs.csv", ["seed", "negated", "task"])
    prompts = task_prompts(store, backbone, specs, seeds, "negation for", length)
    data = {t.name: prepare_split(backbone, t, split, limit=limit) for t in specs}
    cache: dict[tuple[str, str, int], float] = {}

    def score(t, tensor) -> float:
        return evaluate(backbone, t, tensor, data[t.name], batch_size=batch_size).main

    def cached(kind: str, t, seed: int, make) -> float:
        key = (kind, t.name, seed)
        if key not in cache:
            cache[key] = score(t, make())
        return cache[key]

    for neg in specs:
        for seed in sorted(prompts[neg.name]):
            tau = prompts[neg.name][seed].vector()
            for t in specs:
                own = prompts[t.name].get(seed)
                if own is None or log.has(seed=seed, negated=neg.name, task=t.name):
                    continue
                tuned = cached("tuned", t, seed, lambda: own.tensor)
                if t.name == neg.name:
                    role = "target"
                    before = cached("untuned", t, seed, lambda: own.origin.tensor)
                    after = score(t, (tau * -coef).apply_to(own.origin))
                else:
                    role, before = "control", tuned
                    after = score(t, (own.vector() - tau * coef).apply_to(own.origin))
                rel = after / before if before else float("nan")
                log.add({"seed": seed, "origin": own.origin.id, "negated": neg.name, "task": t.name, "role": role,
                         "coef": coef, "split": split, "before": before, "after": after, "tuned": tuned,
                         "relative": rel})
            if progress:
                progress(f"negated {neg.name}, seed {seed}")
    runs = log.frame()
    summary = summarize(runs, ["negated", "task", "role"], "relative", also_mean=["before", "after", "tuned"])
    fig = go.Figure()
    if not summary.empty:
        names = list(dict.fromkeys(summary["task"]))
        pivot = summary.pivot(index="negated", columns="task", values="mean").reindex(index=names, columns=names)
        fig.add_heatmap(z=pivot.values, x=names, y=names, zmin=0, zmax=1.2, colorscale="RdBu",
                        colorbar={"title": "after / before"},
                        text=[[f"{v:.2f}" for v in row] for row in pivot.values], texttemplate="%{text}")
        fig.update_layout(xaxis_title="scored task", yaxis_title="negated vector", yaxis_autorange="reversed")
    fig.update_layout(title=f"Task negation on {backbone.name} (coef {coef:g}): score after / before")
    files = write_outputs(out, NAME, summary, {NAME: fig})
    return ExperimentResult(NAME, runs, summary, [log.path, *files])
