"""Task addition (the paper's Fig. 2).

For every set of tasks (pairs by default) and every origin, P0 + lambda * sum(tau_i) with one shared
lambda chosen on validation (mean of the tasks' validation scores over a grid, default 0..1 step 0.05);
each task's test score is reported relative to its own single-task prompt from the same origin, and as
the share of the learned gain that survives, (combined - untuned) / (single - untuned), where ``untuned``
is the origin P0 itself on the same rows (the floor: an encoder's untuned origin can score most of what
tuning reaches, which makes the relative score look good for any combination).

``methods`` compares merge methods on the same sets: ``sum`` is the paper's plain addition; ``ties`` and
``dare`` (:mod:`tpv_core.merges`, default options) merge the same vectors, and each gets its own lambda.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

from tpv_core.combine import get_method, lambda_search, merge
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
    import pandas as pd

    from tpv_core.backbones.base import Backbone

NAME = "addition"
DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def run_addition(
    backbone: "Backbone",
    store: PromptStore,
    tasks: Sequence[str],
    out_dir: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    length: int | None = None,
    set_size: int = 2,
    methods: Sequence[str] = ("sum",),
    grid: Sequence[float] = DEFAULT_GRID,
    split: str = "test",
    val_limit: int | None = 200,
    limit: int | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> ExperimentResult:
    out = Path(out_dir)
    specs = [get_task(t, store.root) for t in tasks]
    if len(specs) < set_size:
        raise ValueError(f"addition of {set_size} tasks needs at least {set_size} tasks, got {len(specs)}")
    methods = list(dict.fromkeys(methods))
    for m in methods:
        get_method(m)  # an unknown name fails before any evaluation
    log = ResultsLog(out / f"{NAME}_runs.csv", ["method", "combo", "seed", "task"])
    prompts = task_prompts(store, backbone, specs, seeds, "addition for", length)
    val = {t.name: prepare_split(backbone, t, "validation", limit=val_limit) for t in specs}
    test = {t.name: prepare_split(backbone, t, split, limit=limit) for t in specs}
    single: dict[tuple[str, int], float] = {}
    floor = ResultsLog(out / f"{NAME}_untuned.csv", ["task", "seed", "split", "n"])

    def score(t, tensor, prepared) -> float:
        return evaluate(backbone, t, tensor, prepared[t.name], batch_size=batch_size).main

    for combo in itertools.combinations(specs, set_size):
        label = "+".join(t.name for t in combo)
        common = set.intersection(*(set(prompts[t.name]) for t in combo))
        for method, seed in itertools.product(methods, sorted(common)):
            if all(log.has(method=method, combo=label, seed=seed, task=t.name) for t in combo):
                continue
            origin = prompts[combo[0].name][seed].origin
            tau = merge(method, [prompts[t.name][seed].vector() for t in combo])

            def val_score(lam: float) -> float:
                p = tau.apply_to(origin, coef=lam)
                return sum(score(t, p, val) for t in combo) / len(combo)

            best_lambda, _table = lambda_search(val_score, grid=list(grid))
            combined = tau.apply_to(origin, coef=best_lambda)
            for t in combo:
                key = (t.name, seed)
                if key not in single:
                    single[key] = score(t, prompts[t.name][seed].tensor, test)
                comb = score(t, combined, test)
                rel = comb / single[key] if single[key] else float("nan")
                log.add({"method": method, "combo": label, "seed": seed, "origin": origin.id, "task": t.name,
                         "lambda": best_lambda, "split": split, "combined": comb, "single": single[key],
                         "relative": rel})
            if progress:
                progress(f"{label} ({method}) seed {seed}: lambda={best_lambda:g}")
    for t in specs:  # the untuned floor of every task and origin on the scored rows (also for older logs)
        for seed, prompt in prompts[t.name].items():
            n = len(test[t.name])
            if not floor.has(task=t.name, seed=seed, split=split, n=n):
                floor.add({"task": t.name, "seed": seed, "split": split, "n": n, "origin": prompt.origin.id,
                           "untuned": score(t, prompt.origin.require_tensor(), test)})
    runs = with_gain_share(log.frame(), floor.frame())
    by = ["method", "combo", "task"]
    summary = summarize(runs, by, "relative", also_mean=["lambda", "untuned", "single", "combined"])
    if "gain_share" in runs.columns:
        gain = summarize(runs, by, "gain_share")[[*by, "mean", "std"]]
        summary = summary.merge(gain.rename(columns={"mean": "gain_share_mean", "std": "gain_share_std"}), on=by)
    fig = addition_figure(summary, f"Task addition on {backbone.name}: test score relative to the single-task prompt")
    files = write_outputs(out, NAME, summary, {NAME: fig})
    return ExperimentResult(NAME, runs, summary, [log.path, *files])


def with_gain_share(runs: "pd.DataFrame", floor: "pd.DataFrame") -> "pd.DataFrame":
    """``runs`` with each task's untuned score (from ``floor``, matched on task and origin seed) and
    ``gain_share`` = (combined - untuned) / (single - untuned); nan where tuning gained nothing."""
    if runs.empty or floor.empty:
        return runs
    f = floor.drop_duplicates(["task", "seed"], keep="last")[["task", "seed", "untuned"]]
    out = runs.drop(columns=[c for c in ("untuned", "gain_share") if c in runs.columns]).merge(
        f, on=["task", "seed"], how="left")
    gained = out["single"] - out["untuned"]
    out["gain_share"] = ((out["combined"] - out["untuned"]) / gained).where(gained > 0)
    return out


def addition_figure(summary: "pd.DataFrame", title: str) -> go.Figure:
    """Bars of relative score: x = (combination, method), one bar per task of the combination, in the
    combination's order (so a pair takes two slots, not one per task of the whole experiment), coloured
    by task."""
    fig = go.Figure()
    if summary.empty:
        return fig.update_layout(title=title)
    methods = list(dict.fromkeys(summary["method"]))
    combos = list(dict.fromkeys(summary["combo"]))
    order = summary.assign(c=summary["combo"].map(combos.index), m=summary["method"].map(methods.index))
    order = order.sort_values(["c", "m"])
    colours = dict(zip(dict.fromkeys(order["task"]), itertools.cycle(qualitative.Plotly)))
    shown: set[str] = set()
    position = order.apply(lambda r: r["combo"].split("+").index(r["task"]), axis=1)
    for (task_name, pos), part in order.groupby([order["task"], position], sort=False):
        fig.add_bar(name=task_name, legendgroup=task_name, showlegend=task_name not in shown, offsetgroup=str(pos),
                    x=[part["combo"].tolist(), part["method"].tolist()], y=part["mean"],
                    marker_color=colours[task_name], error_y={"type": "data", "array": part["std"]})
        shown.add(task_name)
    bars = sum(len(c.split("+")) for c in combos) * len(methods)
    fig.update_layout(title=title, barmode="group", yaxis_title="relative score", template="plotly_white",
                      width=max(700, 40 * bars + 250), height=500)
    return fig
