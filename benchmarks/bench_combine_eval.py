"""The Combine page's evaluation before and after issue 17, in one process, interleaved (ratios, medians).

``python -m benchmarks.bench_combine_eval [--rounds 3] [--tasks ag_news cb]``

What the Combine page does after a slider release on MiniLM, without the page around it: one combined
prompt scored on the chosen tasks' whole validation splits, one batch of each task in turn
(``interleaved_evaluation``), timed to the first running estimate and to the last row.

- ``before``: batches of 16 in the split's shuffled order - the page as it was;
- ``after``: batches of 16, length-sorted within spans of 4 batches (``batch_plan``) - the page now;
- experiments that did not land (measured here, see benchmarks/README.md): ``bf16w`` (the sorted batches with
  the frozen Linear weights kept in bf16, so bf16 autocast need not cast them on every call: bit-identical
  scores) and ``bs32`` (the sorted batches, 32 rows each). Every variant scores the same rows and
must give the same scores. The machine is shared: wall times move with the other users' load, so the
process CPU time (one thread: the work done) is reported beside them; medians and same-round ratios only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", nargs="+", default=["ag_news", "cb"])
    ap.add_argument("--store", default="data/zoo")
    ap.add_argument("--limit", type=int, default=None, help="validation rows per task (default: all)")
    ap.add_argument("--variants", nargs="+", default=["before", "after"],
                    choices=["before", "after", "bf16w", "bs32"])
    args = ap.parse_args(argv)

    from benchmarks.common import cpu_model
    from tpv_core import evaluation
    from tpv_core.appstate import interleaved_evaluation
    from tpv_core.backbones import load_backbone
    from tpv_core.evaluation import prepare_split
    from tpv_core.store import PromptStore
    from tpv_core.tasks import get_task

    bb = load_backbone("minilm-l6")
    store = PromptStore(args.store)
    prompts = [store.load_all(backbone="minilm-l6", task=t)[0] for t in args.tasks]
    origin = prompts[0].origin
    combined = (prompts[0].vector() * 0.55 + prompts[1].vector() * -0.2).apply_to(origin) if len(prompts) > 1 \
        else prompts[0].tensor
    prepared = {t: prepare_split(bb, get_task(t), "validation", limit=args.limit) for t in args.tasks}
    linears = [m for m in bb.model.modules() if isinstance(m, torch.nn.Linear)]
    fp32 = [(m.weight.data, None if m.bias is None else m.bias.data) for m in linears]
    bf16 = [(w.to(torch.bfloat16), None if b is None else b.to(torch.bfloat16)) for w, b in fp32]
    plan = evaluation.batch_plan

    def unsorted(lengths, first, size, span_batches=4):
        total, out, start = len(lengths), [], 0
        while start < total:
            stop = min(total, start + (first if start == 0 else size))
            out.append(list(range(start, stop)))
            start = stop
        return out

    def set_weights(ws):
        for m, (w, b) in zip(linears, ws, strict=True):
            m.weight.data = w
            if b is not None:
                m.bias.data = b

    # (bf16 weights, length-sorted, batch size) of each variant: one change at a time against "before"
    setups = {"before": (False, False, 16), "after": (False, True, 16), "bf16w": (True, True, 16),
              "bs32": (False, True, 32)}

    def run(variant: str) -> dict:
        w16, sort, bs = setups[variant]
        set_weights(bf16 if w16 else fp32)
        evaluation.batch_plan = plan if sort else unsorted
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            first, results = None, {}
            for name, res in interleaved_evaluation(bb, combined, prepared, batch_size=bs):
                first = first if first is not None else time.perf_counter() - t0
                results[name] = res
            full, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            evaluation.batch_plan = plan
            set_weights(fp32)
        return {"first_s": first, "full_s": full, "cpu_s": cpu, "rows": sum(r.n for r in results.values()),
                "scores": {k: round(v.main, 6) for k, v in results.items()}}

    rounds: dict[str, list[dict]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for variant in args.variants:
            rounds[variant].append(run(variant))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("first_s", "full_s", "cpu_s")}
           for v, rs in rounds.items()}
    out = {
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "shared": True},
        "tasks": args.tasks, "rows": rounds["after"][0]["rows"], "rounds": args.rounds,
        "median": med,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_time_ratio_vs_before": {v: med["before"]["cpu_s"] / m["cpu_s"] for v, m in med.items()}
        if "before" in med else None,
        "wall_ratio_vs_before": {v: med["before"]["full_s"] / m["full_s"] for v, m in med.items()}
        if "before" in med else None,
        "same_scores": len({json.dumps(r[0]["scores"]) for r in rounds.values()}) == 1,
        "runs": rounds,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
