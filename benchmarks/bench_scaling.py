"""5. Scaling: training-step time as the soft prompt grows (L = 10, 20, 50, 100 at 64 input tokens)
and as the input grows (32, 64, 128, 256 tokens at L = 20).

One step = ``Backbone.loss`` + backward + gradient clipping + AdamW on the prompt (what ``tune_prompt``
does per step; ``common.train_step_fn``), B rows of exactly n input tokens (slices of real task text,
no padding), all configurations interleaved round by round. Reported against the model-FLOP formula of
``common.FlopModel.train_flops`` so the growth can be read as "cost per unit of work".
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks.common import flop_model, interleave, median, median_dict, peak, train_step_fn
from tpv_core.backbones import Backbone, LabelSet
from tpv_core.tasks import get_task, load_split

PROMPT_LENGTHS = (10, 20, 50, 100)
INPUT_LENGTHS = (32, 64, 128, 256)
LABELS = LabelSet(("negative", "positive"), ("The sentiment of this text is negative.",
                                             "The sentiment of this text is positive."))


def exact_rows(bb: Backbone, n_tokens: int, batch: int, task_name: str = "imdb") -> list[list[int]]:
    """``batch`` rows of exactly ``n_tokens`` token ids cut from real (long) task texts."""
    task = get_task(task_name)
    text = " ".join(task.format(r, "encoder") for r in load_split(task, "train")[:40])
    ids = bb.tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = []
    for i in range(batch):
        start = (i * 997) % max(1, len(ids) - n_tokens)
        rows.append(ids[start:start + n_tokens])
    return rows


def bench_scaling(bbs: dict[str, Backbone], *, rounds: int, batch: int, log: Callable[[str], None] = print,
                  prompt_lengths: tuple[int, ...] = PROMPT_LENGTHS,
                  input_lengths: tuple[int, ...] = INPUT_LENGTHS) -> dict[str, Any]:
    configs = sorted({(L, 64) for L in prompt_lengths} | {(20, n) for n in input_lengths})
    out: dict[str, Any] = {}
    for name, bb in bbs.items():
        targets = torch.arange(batch, device=bb.device) % 2
        fns: dict[str, Callable] = {
            f"{L}|{n}": train_step_fn(bb, LABELS, [(bb.collate(exact_rows(bb, n, batch)), targets)], L)
            for L, n in configs}
        for fn in fns.values():  # warm-up: first-call costs (kernel selection, allocations)
            fn()
        fns["peak"] = lambda: peak(bb)
        log(f"  {name}: {len(configs)} configurations, B={batch}, {rounds} round(s)")
        runs = interleave(fns, rounds, log=None)
        fm = flop_model(bb.model)
        pk = median_dict(runs["peak"])
        head = batch if bb.family == "decoder" else 0
        rows = []
        for L, n in configs:
            s = median([r["s"] for r in runs[f"{L}|{n}"]])
            fl = fm.train_flops([L + n] * batch, head)
            rows.append({"prompt_length": L, "input_tokens": n, "step_s": s, "tokens_per_s": batch * (L + n) / s,
                         "model_gflop": fl / 1e9, "achieved_gflops": fl / s / 1e9,
                         "mfu": fl / s / 1e9 / pk["peak_gflops"]})
        b0 = next(r for r in rows if r["prompt_length"] == 20 and r["input_tokens"] == 64)
        for r in rows:
            r["time_vs_L20_n64"] = r["step_s"] / b0["step_s"]
            r["flops_vs_L20_n64"] = r["model_gflop"] / b0["model_gflop"]
        out[name] = {"batch": batch, "precision": pk["precision"], "peak_gflops": pk["peak_gflops"], "rows": rows}
        for r in rows:
            log(f"    L={r['prompt_length']:<4} n={r['input_tokens']:<4} {r['step_s']:.3f} s/step "
                f"({r['time_vs_L20_n64']:.2f}x time for {r['flops_vs_L20_n64']:.2f}x FLOPs), MFU {r['mfu']:.0%}")
    return out
