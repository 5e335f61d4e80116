"""Cross-origin transfer (the paper's Table 1).

For every task and every pair of origins (o1, o2), evaluate P0(o1) + tau(o2) on the test split:
o1 == o2 is the "original" prompt, o1 != o2 the "mixed" one. A task prompt vector that only works from
its own origin collapses in the mixed rows (the paper saw this for TREC on T5). Each origin P0(o1) is
also scored untuned (``kind == "untuned"``, ``vector_origin == "none"``): the floor tuning must beat.
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
    choose_length,
    require,
    stored_prompts,
    summarize,
    write_outputs,
)
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

NAME = "cross_origin"


def run_cross_origin(
    backbone: "Backbone",
    store: PromptStore,
    tasks: Sequence[str],
    out_dir: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    length: int | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> ExperimentResult:
    out = Path(out_dir)
    log = ResultsLog(out / f"{NAME}_runs.csv", ["task", "init_origin", "vector_origin"])
    specs = [get_task(name, store.root) for name in tasks]
    length = choose_length(store, backbone, specs, length, seeds)  # one L for every task
    for task in specs:
        prompts = stored_prompts(store, backbone, task, seeds, length)
        require(prompts, f"cross-origin for {task.name}", store, backbone.name, need=2)
        prepared = None
        for s1, p1 in prompts.items():
            for s2, p2 in [(None, None), *prompts.items()]:
                vector_origin = "none" if p2 is None else p2.origin.id
                if log.has(task=task.name, init_origin=p1.origin.id, vector_origin=vector_origin):
                    continue
                if prepared is None:
                    prepared = prepare_split(backbone, task, split, limit=limit)
                tensor = p1.origin.require_tensor() if p2 is None else p2.vector().apply_to(p1.origin)
                res = evaluate(backbone, task, tensor, prepared, batch_size=batch_size)
                kind = "untuned" if p2 is None else "original" if s1 == s2 else "mixed"
                log.add({"task": task.name, "init_origin": p1.origin.id, "vector_origin": vector_origin,
                         "init_seed": s1, "vector_seed": s2, "kind": kind,
                         "split": split, "n": res.n, "metric": next(iter(res.metrics)), "score": res.main,
                         **{f"m_{k}": v for k, v in res.metrics.items()}})
                if progress:
                    what = "untuned" if p2 is None else f"+ tau({vector_origin})"
                    progress(f"{task.name}: P0({p1.origin.id}) {what} = {res.main:.4f}")
    runs = log.frame()
    runs = runs[runs["task"].isin([get_task(t, store.root).name for t in tasks])] if not runs.empty else runs
    summary = summarize(runs, ["task", "kind"], "score")
    fig = go.Figure()
    for kind in ("untuned", "original", "mixed"):
        part = summary[summary["kind"] == kind]
        fig.add_bar(name=kind, x=part["task"], y=part["mean"], error_y={"type": "data", "array": part["std"]})
    fig.update_layout(title=f"Cross-origin transfer on {backbone.name} ({split}): P0(o1) + tau(o2)",
                      barmode="group", yaxis_title="score (task's main metric)")
    files = write_outputs(out, NAME, summary, {NAME: fig})
    return ExperimentResult(NAME, runs, summary, [log.path, *files])
