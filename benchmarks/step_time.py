"""Seconds per prompt-tuning step (forward + backward of ``Backbone.loss``), fp32 vs bf16 autocast.

B=8 rows of ~64 input tokens, L=20 soft tokens. Usage:
    HF_HUB_OFFLINE=1 python benchmarks/step_time.py [--models minilm-l6 smollm2-135m] [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tpv_core.backbones import LabelSet, load_backbone

SENTENCE = ("the film starts slowly but the acting is strong and the story keeps you watching until the very end "
            "although a few scenes drag on far too long and the music is sometimes too loud for the dialogue ")
LABELS = LabelSet(("positive", "negative"), ("This review is positive.", "This review is negative."))


def texts_of_about(bb, n_tokens: int, batch: int) -> list[str]:
    words = (SENTENCE * 8).split()
    out = []
    for i in range(batch):
        k = len(words)
        while k > 1 and len(bb.tokenize([" ".join(words[i:i + k]) + "\nAnswer:"])[0]) > n_tokens:
            k -= 1
        out.append(" ".join(words[i:i + k]) + "\nAnswer:")
    return out


def step_seconds(bb, batch_size: int, prompt_len: int, input_tokens: int, steps: int, warmup: int) -> dict:
    batch = bb.batch(texts_of_about(bb, input_tokens, batch_size))
    prompt = torch.nn.Parameter(bb.input_embeddings()[100:100 + prompt_len].clone().to(bb.device))
    targets = torch.arange(batch_size, device=bb.device) % len(LABELS)
    times = []
    for s in range(warmup + steps):
        if bb.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        prompt.grad = None
        bb.loss(batch, prompt, LABELS, targets).backward()
        if bb.device.type == "cuda":
            torch.cuda.synchronize()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    return {"tokens": int(batch.lengths.float().mean()), "median_s": statistics.median(times), "min_s": min(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["minilm-l6", "smollm2-135m"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=20)
    ap.add_argument("--input-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; B={args.batch}, L={args.prompt_len}, "
          f"~{args.input_tokens} input tokens; median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'model':<16}{'precision':<11}{'device':<8}{'in tok':>7}{'s/step (median)':>17}{'min':>8}")
    for name in args.models:
        for prec in args.precisions:
            bb = load_backbone(name, device=args.device, precision=prec)
            r = step_seconds(bb, args.batch, args.prompt_len, args.input_tokens, args.steps, args.warmup)
            print(f"{name:<16}{prec:<11}{str(bb.device):<8}{r['tokens']:>7}{r['median_s']:>17.3f}{r['min_s']:>8.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
