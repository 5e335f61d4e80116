"""Does a source's prompt carry to a target's longer inputs? Scores by input length (not in the paper).

For every origin, the initialisations that need no training (`tpv_core.experiments.fewshot.source_inits`:
P0, each source's prompt, P0 + the sum of the sources' vectors) are scored on the target's rows cut to
each of ``max_lengths`` input tokens (the first tokens of every row are kept). Beside the score: accuracy,
the share of rows given each class (a prompt that sends long inputs to one class shows it here), and the
mean number of input tokens scored. The k = 0 point of the few-shot experiment is the row at the
backbone's full length.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go

from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.experiments.common import ExperimentResult, ProgressFn, ResultsLog, summarize, task_prompts, write_outputs
from tpv_core.experiments.fewshot import score_metric, source_inits
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

NAME = "length"
INITS = ("random", "spot", "tpv")


def run_length(
    backbone: "Backbone",
    store: PromptStore,
    target: str,
    sources: Sequence[str],
    out_dir: str | Path,
    *,
    max_lengths: Sequence[int] = (32, 64, 128, 512),
    seeds: Sequence[int] | None = None,
    length: int | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> ExperimentResult:
    if not max_lengths or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in max_lengths):
        raise ValueError(f"max lengths must be whole numbers >= 1, got {list(max_lengths)}")
    out = Path(out_dir)
    tgt = get_task(target, store.root)
    srcs = [get_task(s, store.root) for s in sources]
    prompts = task_prompts(store, backbone, srcs, seeds, "length transfer source", length)
    common = sorted(set.intersection(*(set(p) for p in prompts.values())))
    metric = score_metric(tgt)
    log = ResultsLog(out / f"{NAME}_runs.csv", ["target", "init", "seed", "max_length"])
    prepared = prepare_split(backbone, tgt, split, limit=limit)
    kept = {m: sum(min(len(ids), m) for ids in prepared.ids) / max(len(prepared), 1) for m in sorted(set(max_lengths))}
    for seed in common:
        inits = source_inits(prompts, [s.name for s in srcs], seed, INITS)
        for max_length, mean_tokens in kept.items():
            for init, tensor in inits.items():
                if log.has(target=tgt.name, init=init, seed=seed, max_length=max_length):
                    continue
                ev = evaluate(backbone, tgt, tensor, prepared, batch_size=batch_size, max_length=max_length)
                shares = {f"pred_{name}": sum(p == c for p in ev.predictions) / max(len(ev.predictions), 1)
                          for c, name in enumerate(tgt.label_names)} if not tgt.regression else {}
                log.add({"target": tgt.name, "init": init, "seed": seed, "max_length": max_length,
                         "sources": "+".join(s.name for s in srcs), "split": split, "n": ev.n,
                         "mean_tokens": round(mean_tokens, 1), "metric": metric, "score": ev.metrics[metric],
                         **{f"m_{m}": v for m, v in ev.metrics.items()}, **shares})
                if progress:
                    progress(f"{tgt.name} {init} origin {seed} max_length {max_length}: {metric}={ev.metrics[metric]:.4f}")
    runs = log.frame()
    summary = summarize(runs, ["target", "init", "max_length"], "score",
                        also_mean=[c for c in runs.columns if c.startswith("pred_") or c == "mean_tokens"])
    fig = go.Figure()
    for init, part in summary[summary["target"] == tgt.name].groupby("init", sort=False):
        part = part.sort_values("max_length")
        fig.add_scatter(x=part["max_length"], y=part["mean"], mode="lines+markers", name=str(init),
                        error_y={"type": "data", "array": part["std"]})
    fig.update_layout(title=f"{tgt.name} from {' + '.join(s.name for s in srcs)} on {backbone.name}: {metric} by "
                            f"input tokens kept ({split})", xaxis_title="input tokens kept (max length)",
                      yaxis_title=metric, xaxis_type="log", template="plotly_white", legend_title="initialisation")
    files = write_outputs(out, f"{NAME}_{tgt.name}", summary[summary["target"] == tgt.name],
                          {f"{NAME}_{tgt.name}": fig})
    return ExperimentResult(NAME, runs, summary, [log.path, *files])
