"""Ablation: what each change that landed in the core is worth, measured side by side in one run
(and the one prototype that did not land, where it applies).

Variants, each a ``tune_prompt`` run as in section 1 (``bench_train.run_ours``: the whole training
split, steady-state tokens/s), interleaved round by round:

* ``current``: the code as it ships.
* ``sdpa``, where the current code runs eager attention (CPU + bf16 autocast): the same backbone with
  ``model.set_attn_implementation("sdpa")`` (transformers' default) restored: undoes the eager change.
  Where the current code keeps SDPA (fp32 CPUs without native bf16, CUDA), ``eager`` instead: a
  prototype of extending the switch to that setting.
* ``ungrouped``: ``TrainConfig(group_by_length=False)``: random batches, undoes the grouping change.
* ``sdpa+ungrouped`` (where ``sdpa`` runs): both undone, the code as it was before the two changes.
* ``bf16w`` (bf16 only; did not land, 0.99x when it was measured): the Linear weights of the transformer
  blocks stored in bf16 (norms, embeddings, LM head, soft prompt and optimizer state stay fp32; autocast
  stays on), which would spare autocast its per-forward weight casts.

Every variant uses the same data seed: the attention and weight variants train on the very same
batches as ``current``; ``ungrouped`` draws random batches (other rows), hence tokens/s throughout.
Also timed: the evaluation forward (rank classification, one validation batch of 32) of each backbone
variant (grouping does not touch evaluation), with the share of predictions equal to the current code's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from benchmarks.bench_train import answer_length, make_case, mfu, raw, run_ours
from benchmarks.common import flop_model, interleave, median, now, peak, sync, task_batches
from tpv_core.backbones import Backbone, LabelSet, attention, load_backbone


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a HF model (decoder layers / encoder layers)."""
    for path in ("model.layers", "encoder.layer", "encoder.block", "decoder.block", "transformer.h"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ValueError(f"no transformer blocks found in {type(model).__name__}")


def bf16_weights(bb: Backbone) -> Backbone:
    """The ``bf16w`` prototype, in place: Linear layers of the blocks in bf16 (CPU layer_norm wants fp32
    parameters, so norms stay fp32)."""
    for b in blocks(bb.model):
        for m in b.modules():
            if isinstance(m, torch.nn.Linear):
                m.to(torch.bfloat16)
    return bb


def eval_fn(bb: Backbone, labels: LabelSet, batches) -> Callable[[], dict[str, Any]]:
    prompt = bb.input_embeddings()[100:120].clone().to(bb.device)

    def run() -> dict[str, Any]:
        sync(bb.device)
        t0 = now()
        preds = []
        with torch.no_grad():
            for batch, _ in batches:
                preds.extend(bb.label_scores(batch, prompt, labels).argmax(-1).tolist())
        sync(bb.device)
        return {"s": (now() - t0) / len(batches), "preds": preds}

    return run


def bench_ablation(bbs: dict[str, Backbone], *, task_name: str, steps: int, rounds: dict[str, int],
                   batch_size: int = 8, eval_batch_size: int = 32, device: str | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """``bbs``: the current backbones (reused as ``current``); the variants' backbones are loaded here.
    ``rounds``: per model."""
    results: dict[str, Any] = {}
    for name, cur in bbs.items():
        attn = str(getattr(cur.model.config, "_attn_implementation", None))
        other = "sdpa" if attn in ("eager", attention.NAME) else "eager"
        alt = load_backbone(name, device=device)
        alt.model.set_attn_implementation(other)
        backbones = {"current": cur, other: alt}
        variants: dict[str, tuple[Backbone, dict[str, Any]]] = {
            "current": (cur, {}), other: (alt, {}), "ungrouped": (cur, {"group_by_length": False})}
        if other == "sdpa":
            variants["sdpa+ungrouped"] = (alt, {"group_by_length": False})
        if cur.compute_dtype == torch.bfloat16:
            backbones["bf16w"] = bf16_weights(load_backbone(name, device=device))
            variants["bf16w"] = (backbones["bf16w"], {})
        case = make_case(cur, task_name, steps, batch_size)
        labels = case.task.label_set()
        for bb in backbones.values():
            if bb.family == "encoder":
                bb.description_embeddings(labels)
        _, eval_batches = task_batches(cur, task_name, 1, eval_batch_size, seed=2, split="validation")
        fns: dict[str, Callable[[], Any]] = {f"train/{v}": (lambda bb=bb, o=o, v=v: run_ours(case, bb=bb, label=v, **o))
                                             for v, (bb, o) in variants.items()}
        fns.update({f"eval/{b}": eval_fn(bb, labels, eval_batches) for b, bb in backbones.items()})
        short = dataclasses.replace(case, steps=min(steps, 2))
        for v, (bb, o) in variants.items():  # warm-up (untimed)
            run_ours(short, bb=bb, label=v, **o)
        for b in backbones:
            fns[f"eval/{b}"]()
        fns["peak"] = lambda: peak(cur)
        log(f"  {name}: current attention {attn}, precision {cur.compute_dtype}; variants {', '.join(variants)}; "
            f"{steps} steps of B={batch_size}, {rounds[name]} round(s)")
        runs = interleave(fns, rounds[name], log=log)
        fm, answer_len = flop_model(cur.model), answer_length(cur, case.task)
        out: dict[str, Any] = {"current_attention": attn, "precision": str(cur.compute_dtype), "steps": steps,
                               "rounds": rounds[name], "batch_size": batch_size, "eval_batch_size": eval_batch_size,
                               "variants": {}}
        cur_runs = runs["train/current"]
        for v in variants:
            tr = runs[f"train/{v}"]
            x = {"tokens_per_s": median([r["tokens_per_s"] for r in tr]), "step_s": median([r["step_s"] for r in tr]),
                 "padding_fraction": median([r["padding_fraction"] for r in tr]),
                 "final_loss": median([r["final_loss"] for r in tr]),
                 "mfu": median([mfu(fm, r, pk, answer_len)["mfu"] for r, pk in zip(tr, runs["peak"])]),
                 "current_over_variant": median([c["tokens_per_s"] / r["tokens_per_s"] for c, r in zip(cur_runs, tr)])}
            if v in backbones:
                ev, ev_cur = runs[f"eval/{v}"], runs["eval/current"]
                x.update(eval_batch_s=median([r["s"] for r in ev]),
                         eval_current_over_variant=median([r["s"] / c["s"] for c, r in zip(ev_cur, ev)]),
                         eval_pred_agreement=sum(a == b for a, b in zip(ev_cur[-1]["preds"], ev[-1]["preds"]))
                         / len(ev[-1]["preds"]))
            out["variants"][v] = x
            log(f"    {v:<15} {x['tokens_per_s']:.0f} tokens/s, {x['step_s']:.3f} s/step, padding "
                f"{x['padding_fraction']:.0%}, MFU {x['mfu']:.0%}; current / variant x{x['current_over_variant']:.2f}"
                + (f"; eval {x['eval_batch_s']:.3f} s/batch (current / variant x{x['eval_current_over_variant']:.2f}), "
                   f"same predictions {x['eval_pred_agreement']:.0%}" if "eval_batch_s" in x else ""))
        out["raw"] = raw({k: v for k, v in runs.items() if k.startswith("train/")})
        results[name] = out
        del alt, backbones, variants, fns, runs
    return results
