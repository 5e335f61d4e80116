"""3. Evaluation throughput: rank classification against generation + exact match (the paper's way).

SmolLM2 (decoder) only: the T5 path has only a randomly initialised test model. Both methods run on
the same prepared validation rows with the same prompt, interleaved; ``evaluate(method="rank")``
scores every verbaliser in one forward pass per batch; ``evaluate(method="generate")`` decodes greedily
(KV cache, ``max_new_tokens``) and maps the text to a label by whole-string match (no match = wrong).
Agreement = share of rows with the same predicted label, among the rows whose generated text is a
valid label.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks.common import interleave, median, now, sync
from tpv_core.backbones import Backbone
from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.tasks import get_task, text_to_label


def _timed(bb: Backbone, task, prompt, prepared, method: str, batch_size: int, max_new_tokens: int):
    def run() -> dict[str, Any]:
        texts: list[str] = []
        inner = bb.generate

        def capture(*a, **k):  # records the generated texts (instance attribute, this run only)
            out = inner(*a, **k)
            texts.extend(out)
            return out

        bb.generate = capture
        try:
            sync(bb.device)
            t0 = now()
            res = evaluate(bb, task, prompt, prepared, method=method, batch_size=batch_size,
                           max_new_tokens=max_new_tokens)
            sync(bb.device)
            s = now() - t0
        finally:
            del bb.generate
        return {"s": s, "examples_per_s": res.n / s, "predictions": res.predictions, "invalid": res.invalid,
                "metrics": res.metrics, "texts": texts}

    return run


def bench_eval(bb: Backbone, prompts: dict[str, torch.Tensor | None], *, task_name: str, n_rows: int, rounds: int,
               batch_size: int = 32, max_new_tokens: int = 8, log: Callable[[str], None] = print) -> dict[str, Any]:
    task = get_task(task_name)
    prepared = prepare_split(bb, task, "validation", limit=n_rows)
    out: dict[str, Any] = {"model": bb.name, "task": task_name, "rows": len(prepared), "batch_size": batch_size,
                           "max_new_tokens": max_new_tokens, "by_prompt": {}}
    for pname, prompt in prompts.items():
        fns = {m: _timed(bb, task, prompt, prepared, m, batch_size, max_new_tokens) for m in ("rank", "generate")}
        runs = interleave(fns, rounds, log=log)
        rank, gen = runs["rank"][-1], runs["generate"][-1]
        valid = [i for i, g in enumerate(gen["predictions"]) if g >= 0]
        agree = sum(rank["predictions"][i] == gen["predictions"][i] for i in valid)
        # the decoder keeps generating after the label ("negative\n\nThe answer is: negative"); what a
        # stop-at-newline rule would give:
        first = [text_to_label(task, t.split("\n")[0]) for t in gen["texts"]]
        valid1 = [i for i, g in enumerate(first) if g is not None]
        agree1 = sum(rank["predictions"][i] == first[i] for i in valid1)
        ratio = median([r["examples_per_s"] / g["examples_per_s"] for r, g in zip(runs["rank"], runs["generate"])])
        res = {
            "rank_examples_per_s": median([r["examples_per_s"] for r in runs["rank"]]),
            "generate_examples_per_s": median([g["examples_per_s"] for g in runs["generate"]]),
            "rank_vs_generate": ratio,
            "generated_valid": len(valid), "generated_invalid": gen["invalid"],
            "agreement_on_valid": agree / len(valid) if valid else float("nan"),
            "rank_metrics": rank["metrics"], "generate_metrics": gen["metrics"],
            "first_line_valid": len(valid1),
            "first_line_agreement": agree1 / len(valid1) if valid1 else float("nan"),
            "sample_generations": gen["texts"][:5],
        }
        out["by_prompt"][pname] = res
        log(f"  {bb.name} prompt={pname}: rank {res['rank_examples_per_s']:.2f} ex/s, generate "
            f"{res['generate_examples_per_s']:.2f} ex/s (rank x{ratio:.2f}); {len(valid)}/{len(prepared)} generations "
            f"are labels, agreement {res['agreement_on_valid']:.0%}; first line: {len(valid1)} labels, agreement "
            f"{res['first_line_agreement']:.0%}")
    return out
