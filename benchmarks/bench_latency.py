"""4. Live combination latency: from new weights to the first running estimate and to the full split.

The app's situation: the backbone is loaded and the validation split prepared (tokenized) once; the
user moves a slider. Timed from that moment: ``combine_prompt`` (P0 + sum_i w_i tau_i) and
``iter_evaluate`` until its first yield (first running estimate) and its last (full split). Batch
size 32 (the library's default) and 16 (what the app's combine page passes), and 8, in the same rounds.
``iter_evaluate`` scores a first batch of ``FIRST_BATCH`` (8) rows whatever the batch size, so the first
estimate should barely depend on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from benchmarks.common import interleave, median, now, sync
from tpv_core.backbones import Backbone
from tpv_core.combine import combine_prompt
from tpv_core.evaluation import PreparedSplit, iter_evaluate, prepare_split
from tpv_core.prompts import TaskPromptVector, make_origin
from tpv_core.tasks import get_task


def vectors_for(bb: Backbone, n: int = 3, L: int = 20):
    origin = make_origin(bb, seed=0, length=L)
    g = torch.Generator().manual_seed(1)
    scale = float(origin.require_tensor().std())
    vecs = [TaskPromptVector(torch.randn(L, bb.dim, generator=g) * scale * 0.3, bb.name, ((f"task{i}", 1.0),),
                             (origin.id,)) for i in range(n)]
    return origin, vecs


def _run(bb: Backbone, prepared: PreparedSplit, origin, vecs, batch_size: int, full: bool):
    weights = [0.5, 0.3, 0.2]

    def run() -> dict[str, Any]:
        sync(bb.device)
        t0 = now()
        prompt = combine_prompt(vecs, weights, origin)
        first = None
        res = None
        for res in iter_evaluate(bb, prepared.task, prompt, prepared, batch_size=batch_size):
            if first is None:
                sync(bb.device)
                first = now() - t0
                if not full:
                    break
        sync(bb.device)
        return {"first_s": first, "full_s": (now() - t0) if full else None, "n": res.n, "main": res.main}

    return run


def bench_latency(bbs: dict[str, Backbone], *, task_name: str, rounds: int, full_limit: dict[str, int | None],
                  split_limit: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    task = get_task(task_name)
    out: dict[str, Any] = {}
    for name, bb in bbs.items():
        prepared = prepare_split(bb, task, "validation", limit=split_limit)
        origin, vecs = vectors_for(bb)
        cold = _run(bb, prepared, origin, vecs, 32, full=False)()
        first_fns = {f"bs{b}": _run(bb, prepared, origin, vecs, b, full=False) for b in (32, 16, 8)}
        log(f"  {name}: first estimate, {rounds} round(s)")
        firsts = interleave(first_fns, rounds, log=log)
        limit = full_limit.get(name)
        part = prepared if limit is None else dataclasses.replace(
            prepared, rows=prepared.rows[:limit], ids=prepared.ids[:limit], targets=prepared.targets[:limit])
        log(f"  {name}: full split of {len(part)} rows, 1 round")
        full = _run(bb, part, origin, vecs, 32, full=True)()
        res: dict[str, Any] = {
            "rows_full": len(part), "rows_split": len(prepared), "cold_first_s": cold["first_s"],
            "first_s": {k: median([r["first_s"] for r in v]) for k, v in firsts.items()},
            "full_s": full["full_s"], "full_metric": full["main"],
        }
        out[name] = res
        log(f"  {name}: first estimate {res['first_s']['bs32']:.2f} s (bs32), {res['first_s']['bs16']:.2f} s (bs16); "
            f"full {len(part)} rows {res['full_s']:.1f} s")
    return out
