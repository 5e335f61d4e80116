"""Few-shot initialisation (the paper's Fig. 3).

A target task is tuned on k examples (stratified, seeded) from several initialisations, all with the
same training budget; k = 0 evaluates the initialisation itself:

* ``random``: the origin P0;
* ``spot:<source>``: the source task's tuned prompt from the same origin (SPoT);
* ``multitask``: one prompt tuned on the union of the sources (taken from the store when present,
  else tuned here with the sources' default budget and saved to the store);
* ``tpv``: P0 + the sum of the sources' task prompt vectors (ours).

PEFT's multitask prompt tuning (MPT) is not wired: it needs its own two-stage training with task ids,
which cannot be held to the same budget through this loop.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from tpv_core import distributed
from tpv_core.atomic import atomic_write_text
from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.experiments.common import (
    ExperimentResult,
    ProgressFn,
    ResultsLog,
    summarize,
    task_prompts,
    write_outputs,
)
from tpv_core.experiments.paired import paired_tests
from tpv_core.prompts import TaskPromptVector
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task, load_split
from tpv_core.tasks import k_shot as sample_k_shot
from tpv_core.training import TrainConfig, task_key, tune_prompt

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tpv_core.backbones.base import Backbone
    from tpv_core.prompts import SoftPrompt

NAME = "fewshot"
DEFAULT_KS = (0, 5, 10, 25, 50, 100, 250, 500, 1000)
INITS = ("random", "spot", "multitask", "tpv")
#: The paper's source -> target groups.
GROUPS = {
    "nli": (("mnli", "qnli"), ("scitail", "snli")),
    "classification": (("dbpedia_14", "trec"), ("ag_news", "yahoo_answers_topics")),
    "sentiment": (("sst2", "yelp_polarity"), ("imdb", "sst5")),
}


@dataclass(frozen=True)
class FewshotProgress:
    """Structured progress of :func:`run_fewshot`: ``done`` of ``total`` runs (runs already in the results
    log count as done), and the row of the run that just finished (None for the first report)."""

    done: int
    total: int
    row: dict[str, Any] | None = None


def init_names(inits: Sequence[str], sources: Sequence[str]) -> list[str]:
    """The initialisations a run compares: ``spot`` expands to one ``spot:<source>`` per source."""
    out = []
    for init in INITS:
        if init in inits:
            out.extend([f"spot:{s}" for s in sources] if init == "spot" else [init])
    return out


def source_inits(src_prompts: dict[str, dict[int, "SoftPrompt"]], sources: Sequence[str], seed: int,
                 inits: Sequence[str]) -> dict[str, "torch.Tensor"]:
    """The initial prompts that need no training, from the sources' stored prompts of origin ``seed``:
    ``random`` (P0), one ``spot:<source>`` per source, ``tpv`` (P0 + the sum of the sources' vectors)."""
    first = src_prompts[sources[0]][seed]
    out = {}
    if "random" in inits:
        out["random"] = first.origin.require_tensor()
    if "spot" in inits:
        out.update({f"spot:{s}": src_prompts[s][seed].tensor for s in sources})
    if "tpv" in inits:
        out["tpv"] = TaskPromptVector.sum([src_prompts[s][seed].vector() for s in sources]).apply_to(first.origin)
    return out


def score_metric(task) -> str:
    """The paper reports F1 for few-shot: macro-F1 for multi-class, F1 for binary tasks."""
    for m in ("macro_f1", "f1"):
        if m in task.metrics:
            return m
    return task.metrics[0]


def run_fewshot(
    backbone: "Backbone",
    store: PromptStore,
    target: str,
    sources: Sequence[str],
    out_dir: str | Path,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    seeds: Sequence[int] | None = None,
    length: int | None = None,
    data_seeds: Sequence[int] | None = None,
    inits: Sequence[str] = INITS,
    config: TrainConfig | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    on_run: Callable[[FewshotProgress], None] | None = None,
    strict_ks: bool = False,
) -> ExperimentResult:
    """Run (or resume) the few-shot grid: every common origin seed x data seed x init x k; ``progress`` gets
    messages, ``on_run`` structured :class:`FewshotProgress` after every run. ``strict_ks``: a k above the
    target's training rows is an error (the CLI's explicit ``--k``); otherwise it is capped to them (the
    default list reaches 1000).

    A run is one cell (origin seed, data seed): the data seed draws the k training rows and the batch order,
    shared by every init of the cell, so inits compare in pairs (:mod:`tpv_core.experiments.paired`).
    ``data_seeds=None`` pairs each origin with its own seed as data seed (one cell per origin). k = 0 scores
    the initialisation, which no data seed changes: it is run once per origin (under the first data seed).
    """
    out = Path(out_dir)
    tgt = get_task(target, store.root)
    srcs = [get_task(s, store.root) for s in sources]
    unknown = set(inits) - set(INITS)
    if unknown:
        raise ValueError(f"unknown inits {sorted(unknown)}; choose from {', '.join(INITS)}")
    cfg = config or TrainConfig()
    notes = []
    train_rows = load_split(tgt, "train")
    n_train = len(train_rows)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 0]
    if bad:
        raise ValueError(f"k must be whole numbers >= 0, got {bad}")
    if strict_ks and any(k > n_train for k in ks):
        raise ValueError(f"k={max(ks)} exceeds the {n_train} training rows of {tgt.name}; pass k values up to {n_train}")
    capped = sorted({min(int(k), n_train) for k in ks})
    if capped != sorted(set(int(k) for k in ks)):
        notes.append(f"k capped at the {n_train} training rows of {tgt.name}")
    for k in capped:  # refuse up front, naming the k the caller asked for, what stratified sampling cannot give
        if k:
            try:
                sample_k_shot(train_rows, k, 0, tgt)
            except ValueError as exc:
                asked = [a for a in ks if min(int(a), n_train) == k]
                raise ValueError(f"k={asked[0]}" + (f" (capped to the {n_train} training rows)" if asked[0] != k else "")
                                 + f" cannot be drawn from {tgt.name}: {exc}; choose a smaller k") from None
    src_prompts = task_prompts(store, backbone, srcs, seeds, "few-shot source", length)
    common = sorted(set.intersection(*(set(p) for p in src_prompts.values())))
    if not common:
        raise FileNotFoundError(f"the sources {', '.join(s.name for s in srcs)} share no origin seed on {backbone.name}")
    metric = score_metric(tgt)
    log = ResultsLog(out / f"{NAME}_runs.csv", ["target", "k", "init", "seed", "data_seed"],
                     fill={"data_seed": lambda r: r["seed"]})  # logs before data seeds: the origin's seed
    origin_ids = {seed: src_prompts[srcs[0].name][seed].origin.id for seed in common}
    other = sorted({str(r.get("origin")) for r in log.rows if r.get("target") == tgt.name and r.get("seed") in origin_ids
                    and r.get("origin") and str(r.get("origin")) != origin_ids[r["seed"]]})
    if other:  # the log is keyed by origin seed: runs from other origins (another L) would pass for these ones
        raise ValueError(f"{log.path} holds {tgt.name} runs from origins {', '.join(other)}, not "
                         f"{', '.join(origin_ids.values())}; write these runs to another --out folder")
    test = prepare_split(backbone, tgt, split, limit=limit)
    val = prepare_split(backbone, tgt, "validation", limit=cfg.eval_limit)
    multi_name = task_key(srcs)
    names = init_names(inits, [s.name for s in srcs])
    if data_seeds is not None and (not data_seeds or any(isinstance(d, bool) or not isinstance(d, int) or d < 0
                                                       for d in data_seeds)):
        raise ValueError(f"data seeds must be whole numbers >= 0, got {list(data_seeds)}")

    def cells(seed: int) -> list[tuple[int, int]]:
        """(data seed, k) of every run of one origin: k = 0 once, under the first data seed."""
        ds = list(dict.fromkeys(data_seeds)) if data_seeds is not None else [seed]
        return [(d, k) for d in ds for k in capped if k or d == ds[0]]

    total = sum(len(cells(seed)) for seed in common) * len(names)
    done = sum(log.has(target=tgt.name, k=k, init=i, seed=seed, data_seed=d)
               for seed in common for i in names for d, k in cells(seed))
    if on_run:
        on_run(FewshotProgress(done, total))

    for seed in common:
        origin = src_prompts[srcs[0].name][seed].origin
        init_tensors = source_inits(src_prompts, [s.name for s in srcs], seed, inits)
        if "multitask" in inits:
            if store.exists(backbone.name, multi_name, origin.id):
                init_tensors["multitask"] = store.load(backbone.name, multi_name, origin.id).tensor
            else:
                if progress:
                    progress(f"tuning the multi-task prompt {multi_name} from {origin.id}")
                src_cfg = TrainConfig(**{k: v for k, v in (src_prompts[srcs[0].name][seed].metadata.get("training") or {}).items()
                                         if k in {f.name for f in dataclasses.fields(TrainConfig)} and k != "k_shot"})
                mt = tune_prompt(backbone, srcs, origin, src_cfg).prompt
                if distributed.is_main():  # under torchrun: rank 0 writes, every rank goes on with mt
                    store.save(mt)
                init_tensors["multitask"] = mt.tensor
        for data_seed, k in cells(seed):
            for init, tensor in init_tensors.items():
                if log.has(target=tgt.name, k=k, init=init, seed=seed, data_seed=data_seed):
                    continue
                started, steps = time.perf_counter(), 0
                if k == 0:
                    final = tensor
                else:
                    kcfg = dataclasses.replace(cfg, k_shot=k, data_seed=data_seed)
                    res = tune_prompt(backbone, tgt, origin, kcfg, init=tensor, validation=val)
                    final, steps = res.prompt.tensor, res.prompt.metadata["steps"]
                ev = evaluate(backbone, tgt, final, test, batch_size=batch_size)
                log.add({"target": tgt.name, "k": k, "init": init, "seed": seed, "data_seed": data_seed,
                         "origin": origin.id, "sources": "+".join(s.name for s in srcs), "split": split, "n": ev.n,
                         "steps": steps, "metric": metric, "score": ev.metrics[metric],
                         **{f"m_{m}": v for m, v in ev.metrics.items()},
                         "wall_s": round(time.perf_counter() - started, 2)})
                done += 1
                if on_run:
                    on_run(FewshotProgress(done, total, log.rows[-1]))
                if progress:
                    progress(f"{tgt.name} k={k} {init} origin {seed} data {data_seed}: "
                             f"{metric}={ev.metrics[metric]:.4f}")
    runs = log.frame()  # every target run into this folder: the summary covers them all
    summary = summarize(runs, ["target", "k", "init"], "score")
    tests = paired_tests(runs)
    from tpv_core import plots

    mine = summary[summary["target"] == tgt.name]
    fig = plots.fewshot_curve(mine)
    fig.update_layout(title=f"Few-shot {tgt.name} on {backbone.name} ({metric}, {split}; 95 % intervals over "
                            f"{mine['n'].max()} paired runs)")
    files = write_outputs(out, NAME, summary, {f"{NAME}_{tgt.name}": fig})
    if distributed.is_main():
        files.append(atomic_write_text(out / f"{NAME}_tests.csv", tests.to_csv(index=False)))
    return ExperimentResult(NAME, runs, summary, [log.path, *files], notes)
