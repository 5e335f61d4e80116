"""Attention under CPU bf16, side by side: the code as it ships (`tpv_core.backbones.attention`: eager for
training steps and short inputs, SDPA for long inputs without gradients) against the same backbone with
plain eager attention (the code before) and with transformers' SDPA, in one process, interleaved round by
round.

  python -m benchmarks.bench_attention                 # MiniLM: IMDB and SST-2 evaluation, IMDB training steps
  python -m benchmarks.bench_attention --rows 32 --rounds 2 --models minilm-l6 smollm2-135m
  python -m benchmarks.bench_attention --tasks ag_news yelp_polarity --rows 200 --rounds 1   # scores vs eager

Per model: evaluation (`tpv_core.evaluation.evaluate`, batches of 32) of the first ``--rows`` test rows of
each of ``--tasks`` (default IMDB, reviews up to 512 tokens, and SST-2, one sentence), with whether the
scores equal eager's and SDPA's, and prompt-tuning steps (B = 8) on IMDB
training rows (up to 256 tokens, the training default), each from the same L = 20 origin. Prints medians
and same-round ratios, with the CPU and whether it has native bf16: on a CPU without it `auto` runs fp32
and keeps SDPA, so "ships" is SDPA there and the eager row is a prototype.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from benchmarks.common import interleave, machine_info, median, now, task_batches, train_step_fn


def contenders(model: str) -> dict[str, Any]:
    from tpv_core.backbones import load_backbone

    ships = load_backbone(model, device="cpu")
    eager = load_backbone(model, device="cpu")
    eager.model.set_attn_implementation("eager")
    sdpa = load_backbone(model, device="cpu")
    sdpa.model.set_attn_implementation("sdpa")
    return {"ships": ships, "eager": eager, "sdpa": sdpa}


def eval_fn(bb, task_name: str, rows: int) -> Callable[[], dict[str, Any]]:
    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.prompts import make_origin
    from tpv_core.tasks import get_task

    task = get_task(task_name)
    prepared = prepare_split(bb, task, "test", limit=rows)
    prompt = make_origin(bb, seed=0).require_tensor()

    def run() -> dict[str, Any]:
        t0 = now()
        res = evaluate(bb, task, prompt, prepared, batch_size=32)
        return {"s": now() - t0, "main": res.main}

    return run


def bench(models: list[str], rows: int, rounds: int, steps: int, tasks: tuple[str, ...] = ("imdb", "sst2"),
          log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine_info(), "rows": rows, "rounds": rounds, "steps": steps, "models": {}}
    log(f"CPU {out['machine']['cpu']}, native bf16: {out['machine']['avx512_bf16'] or out['machine']['amx_bf16']}")
    for model in models:
        bbs = contenders(model)
        impl = {k: str(bb.model.config._attn_implementation) for k, bb in bbs.items()}
        log(f"{model}: precision {bbs['ships'].compute_dtype}, attention {impl}")
        res: dict[str, Any] = {"attention": impl, "precision": str(bbs["ships"].compute_dtype)}
        cases = [(f"eval {t}", lambda bb, t=t: eval_fn(bb, t, rows)) for t in tasks]
        if steps:
            cases.append(("train imdb", lambda bb: _train(bb, steps)))
        for case, make in cases:
            fns = {k: make(bb) for k, bb in bbs.items()}
            for fn in fns.values():  # untimed: first-call costs (label embeddings, allocator)
                fn()
            got = interleave(fns, rounds)
            secs = {k: [r["s"] for r in v] for k, v in got.items()}
            row = {f"{k}_s": median(v) for k, v in secs.items()}
            for other in ("eager", "sdpa"):
                row[f"vs_{other}"] = median([o / s for o, s in zip(secs[other], secs["ships"])])
            if case.startswith("eval"):
                row["same_score_as_eager"] = all(a["main"] == b["main"] for a, b in zip(got["ships"], got["eager"]))
                row["same_score_as_sdpa"] = all(a["main"] == b["main"] for a, b in zip(got["ships"], got["sdpa"]))
            res[case] = row
            log(f"  {case}: ships {row['ships_s']:.2f}s, eager {row['eager_s']:.2f}s, sdpa {row['sdpa_s']:.2f}s; "
                f"ships is {row['vs_eager']:.2f}x eager's speed, {row['vs_sdpa']:.2f}x SDPA's"
                + (f"; scores equal to eager / SDPA: {row['same_score_as_eager']} / {row['same_score_as_sdpa']}"
                   if case.startswith("eval") else ""))
        out["models"][model] = res
    return out


def _train(bb, steps: int) -> Callable[[], dict[str, Any]]:
    task, batches = task_batches(bb, "imdb", steps, 8)
    return train_step_fn(bb, task.label_set(), batches)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm-l6"])
    ap.add_argument("--rows", type=int, default=64, help="test rows evaluated per task")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="training steps per round (0: no training case)")
    ap.add_argument("--tasks", nargs="+", default=["imdb", "sst2"], help="tasks whose test rows are evaluated")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    res = bench(args.models, args.rows, args.rounds, args.steps, tuple(args.tasks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
