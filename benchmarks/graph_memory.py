"""What one prompt-tuning loss graph keeps for backward, measured on the CPU (the graph is the one a GPU builds).

Saved tensors (unique storages) of ``Backbone.loss`` for one batch, split into copies of weights (saved tensors
shaped like a Linear weight, e.g. bf16 casts made by autocast) and activations (everything else; the frozen
parameters themselves are not counted). Three set-ups per model:

* before: fp32 weights under bf16 autocast (what the code did on a GPU: every Linear weight recast per forward);
* after: bf16 weights under bf16 autocast (what ``precision=auto`` now loads on a bf16 GPU);
* after + gradient checkpointing (``Backbone.enable_gradient_checkpointing``; the recomputed block's
  activations, live during its backward only, are not in the count).

    OMP_NUM_THREADS=1 python -m benchmarks.graph_memory [--rows 8] [--task imdb --max-length 256 --length 50]

SmolLM2-135M is the real model (offline package); t5-base is its shape with random weights (no hub).
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.gpu import build
from tpv_core.backbones import load_backbone
from tpv_core.prompts import make_origin
from tpv_core.tasks import get_task, load_split


def saved_bytes(bb, ids, targets, task, length: int = 20, max_length: int | None = None) -> tuple[int, int, int]:
    """(bytes of weight copies, bytes of activations, tokens incl. the prompt) kept by one loss graph."""
    weight_shapes = {tuple(m.weight.shape) for m in bb.model.modules() if isinstance(m, torch.nn.Linear)}
    params = {p.untyped_storage().data_ptr() for p in bb.model.parameters()}
    seen: set[int] = set()
    sizes = {"weights": 0, "activations": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in params:
            seen.add(key)
            shape = tuple(t.shape)
            kind = "weights" if shape in weight_shapes or shape[::-1] in weight_shapes else "activations"
            sizes[kind] += storage.nbytes()
        return t

    prompt = make_origin(bb, seed=0, length=length).tensor.clone().requires_grad_(True)
    batch = bb.collate(ids, max_length=max_length)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = bb.loss(batch, prompt, task.label_set(), targets)
    loss.backward()
    return sizes["weights"], sizes["activations"], int(batch.lengths.sum()) + length * len(batch)


def variants(name: str):
    ref = (load_backbone(name, device="cpu", precision="bf16") if name == "smollm2-135m"
           else build(name, torch.device("cpu"), "bf16")[0])

    def clone(dtype: torch.dtype):
        return type(ref)(name=ref.name, model_id=ref.model_id, revision=ref.revision, tokenizer=ref.tokenizer,
                         model=copy.deepcopy(ref.model).to(dtype), device=torch.device("cpu"),
                         compute_dtype=torch.bfloat16)

    checkpointed = clone(torch.bfloat16)
    checkpointed.enable_gradient_checkpointing()
    return ref, [("before: fp32 weights + bf16 autocast", ref), ("after: bf16 weights + bf16 autocast",
                                                                   clone(torch.bfloat16)),
                 ("after + gradient checkpointing", checkpointed)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--task", default="sst2", help="e.g. imdb for long inputs")
    ap.add_argument("--max-length", type=int, default=None, help="truncate inputs (e.g. 256, the paper's limit)")
    ap.add_argument("--length", type=int, default=20, help="soft prompt length (the paper: 50 on T5)")
    ap.add_argument("--attn", default=None, choices=["sdpa", "eager"],
                    help="attention implementation (default: what the CPU run picks, eager under bf16; sdpa = a "
                         "GPU's, which keeps no T x T attention matrix for backward)")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "t5-base-shape"])
    args = ap.parse_args()
    task = get_task(args.task)
    rows = load_split(task, "train")[: args.rows]
    targets = torch.tensor([task.label_of(r) for r in rows])
    for name in args.models:
        ref, runs = variants(name)
        ids = ref.tokenize([ref.format(task, r) for r in rows])
        for label, bb in runs:
            if args.attn:
                bb.model.set_attn_implementation(args.attn)
            w, a, tokens = saved_bytes(bb, ids, targets, task, args.length, args.max_length)
            print(f"{name:14s} {label:38s} weight copies {w / 1e6:7.1f} MB  activations {a / 1e6:7.1f} MB  "
                  f"({a / tokens / 1e3:.1f} KB per token, {tokens} tokens)", flush=True)


if __name__ == "__main__":
    main()
