"""GPU benchmark for the day a GPU is lent: random-weight models of SmolLM2's and t5-base's shapes (no hub,
no network), the shipped training step on CUDA. Run through ``benchmarks/gpu.sh``.

Per model: the precision plan ``auto`` picks (bf16 weights straight onto the GPU where bf16 is native), median
seconds per prompt-tuning step (forward + backward + clip + AdamW, as ``tune_prompt`` does it) at the
device-aware default batch, tokens/s, MFU against the GPU's dense bf16 peak (a table of data-sheet figures,
and a measured large bf16 matmul), peak GPU memory with and without gradient checkpointing, and the host
syncs of a real ``tune_prompt`` run counted by ``torch.cuda.set_sync_debug_mode``.

    python -m benchmarks.gpu [--models smollm2-shape t5-base-shape] [--steps 20] [--batch 32] [--out FILE]
    torchrun --nproc_per_node 2 -m benchmarks.gpu --ddp       # 2 ranks: step time, prompts equal on every rank
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any

import torch

# dense bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets (no sparsity); matched on the device name
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0, "GH200": 989.0,
                    "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
                    "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "A6000": 155.0}

SHAPES = {
    # SmolLM2-135M: LlamaForCausalLM, d=576, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocab 49152, tied
    "smollm2-shape": ("decoder", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                      tie_word_embeddings=True, rope_theta=100000.0)),
    # t5-base: d=768, 12 + 12 layers, 12 heads, d_ff 3072, vocab 32128, tied, relu MLP
    "t5-base-shape": ("seq2seq", dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                                      num_decoder_layers=12, num_heads=12, feed_forward_proj="relu",
                                      tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0,
                                      eos_token_id=1)),
}


def spec_peak_tflops(name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return BF16_PEAK_TFLOPS[key]
    return None


def word_tokenizer():
    """A word-level tokenizer over the bundled task texts' words (built locally; ids < a few thousand)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from tpv_core.tasks import get_task, load_split

    words: dict[str, int] = {"<pad>": 0, "</s>": 1, "<unk>": 2, "<s>": 3}
    for name in ("sst2", "qnli"):
        task = get_task(name)
        for row in load_split(task, "train")[:400]:
            for w in task.format(row, "decoder").split():
                words.setdefault(w, len(words))
        for w in (*task.label_set().words,):
            words.setdefault(w, len(words))
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")


def build(shape: str, device: torch.device, precision: str = "auto"):
    """A random-weight backbone of ``shape`` created directly on ``device`` in the plan's weight dtype."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    from tpv_core.backbones.decoder import DecoderBackbone
    from tpv_core.backbones.seq2seq import Seq2SeqBackbone
    from tpv_core.device import enable_tf32, plan_precision

    family, kw = SHAPES[shape]
    tok = word_tokenizer()
    plan = plan_precision(device, precision)
    enable_tf32(device)
    torch.manual_seed(0)
    with torch.device(device):
        if family == "decoder":
            model = LlamaForCausalLM(LlamaConfig(**kw, bos_token_id=3, eos_token_id=1, pad_token_id=0))
        else:
            model = T5ForConditionalGeneration(T5Config(**kw, dropout_rate=0.0))
    model = model.to(plan.weights)
    cls = DecoderBackbone if family == "decoder" else Seq2SeqBackbone
    bb = cls(name=shape, model_id=f"random/{shape}", revision="random-init:seed0", model=model, tokenizer=tok,
             device=device, compute_dtype=plan.compute)
    return bb, plan


def matmul_flops_per_token(bb) -> tuple[float, float]:
    """(encoder-side, decoder-side) Linear weights in the blocks (decoder-only models: all on the first)."""
    enc = dec = 0
    for name, mod in bb.model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            if name.startswith("decoder.") and bb.family == "seq2seq":
                dec += mod.weight.numel()
            else:
                enc += mod.weight.numel()
    return float(enc), float(dec)


def step_flops(bb, batch, answer_tokens: int, L: int) -> float:
    """Model FLOPs of one prompt-tuning step with a frozen model: 4 N per token (forward 2 N, backward 2 N:
    activation gradients only), attention 12 n_layers d_attn T^2 per row, the head on the answer tokens."""
    cfg = bb.model.config
    n_enc, n_dec = matmul_flops_per_token(bb)
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "num_heads"))
    d_attn = heads * int(getattr(cfg, "head_dim", 0) or getattr(cfg, "d_kv", 0) or bb.dim // heads)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "num_layers"))
    lens = [L + int(n) for n in batch.lengths.tolist()]
    flops = sum(4 * n_enc * t + 12 * layers * d_attn * t * t for t in lens)
    flops += 4 * n_dec * answer_tokens + 4 * bb.vocab_size * bb.dim * answer_tokens
    return float(flops)


def batches(bb, task_name: str, n: int, size: int):
    from tpv_core.tasks import get_task, load_split

    task = get_task(task_name)
    rows = load_split(task, "train")[: n * size]
    ids = bb.tokenize([bb.format(task, r) for r in rows])
    targets = torch.tensor([task.label_of(r) for r in rows])
    return task, [(bb.collate(ids[i * size:(i + 1) * size], max_length=256), targets[i * size:(i + 1) * size])
                  for i in range(n)]


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(bb, task, data, steps: int, L: int = 20) -> dict[str, Any]:
    from tpv_core.prompts import make_origin

    prompt = torch.nn.Parameter(make_origin(bb, seed=0, length=L).tensor.to(bb.device))
    opt = torch.optim.AdamW([prompt], lr=0.3, weight_decay=1e-5)
    labels = task.label_set()
    cuda = bb.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(bb.device)
    times, flops = [], []
    for s in range(steps + 3):
        batch, targets = data[s % len(data)]
        _sync(bb.device)
        t0 = time.perf_counter()
        total, count = bb.loss_terms(batch, prompt, labels, targets)
        opt.zero_grad(set_to_none=True)
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_([prompt], 1.0)
        opt.step()
        _sync(bb.device)
        if s >= 3:  # warm-up steps left out
            times.append(time.perf_counter() - t0)
            flops.append(step_flops(bb, batch, count, L))
    tokens = sum(int(b.lengths.sum()) for b, _ in data) / len(data)
    med = statistics.median(times)
    return {"step_s": med, "tokens_per_s": tokens / med, "tflops_per_step": statistics.mean(flops) / 1e12,
            "achieved_tflops": statistics.mean(flops) / med / 1e12,
            "peak_mem_gb": torch.cuda.max_memory_allocated(bb.device) / 1e9 if cuda else None}


def measured_bf16_tflops(device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def count_host_syncs(bb, task, steps: int) -> int:
    """Synchronising CUDA calls during a real ``tune_prompt`` of ``steps`` steps without validation and with
    log_every > steps (so the only loss read is the final one), as torch's sync debug mode reports them."""
    from tpv_core.prompts import make_origin
    from tpv_core.training import TrainConfig, tune_prompt

    origin = make_origin(bb, seed=0, length=20)
    cfg = TrainConfig(steps=steps, eval_every=0, log_every=steps + 1, lr=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            tune_prompt(bb, task, origin, cfg)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def single(args) -> dict[str, Any]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    out: dict[str, Any] = {"gpu": name, "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
                           "torch": torch.__version__, "spec_bf16_tflops": spec_peak_tflops(name) if cuda else None,
                           "measured_bf16_tflops": measured_bf16_tflops(device) if cuda else None, "models": {}}
    for shape in args.models:
        bb, plan = build(shape, device)
        task_name = "qnli"
        size = args.batch
        task, data = batches(bb, task_name, 4, size)
        res = {"precision": plan.name, "batch": size, **time_steps(bb, task, data, args.steps)}
        for ref in ("spec_bf16_tflops", "measured_bf16_tflops"):
            if out[ref]:
                res[f"mfu_vs_{ref.replace('_tflops', '')}"] = res["achieved_tflops"] / out[ref]
        bb.enable_gradient_checkpointing()
        ck = time_steps(bb, task, data, max(3, args.steps // 2))
        res["checkpointed"] = {"step_s": ck["step_s"], "peak_mem_gb": ck["peak_mem_gb"]}
        if cuda:  # syncs a run adds per step: (10-step run - 2-step run) / 8; 0 is the goal
            two, ten = count_host_syncs(bb, task, 2), count_host_syncs(bb, task, 10)
            res["host_syncs"] = {"run_of_2_steps": two, "run_of_10_steps": ten, "per_step": (ten - two) / 8}
        out["models"][shape] = res
        print(json.dumps({shape: res}), flush=True)
        del bb, data
        if cuda:
            torch.cuda.empty_cache()
    return out


def ddp(args) -> dict[str, Any] | None:
    """Under torchrun: every rank on its own GPU, the shipped tune_prompt, step time and equal prompts."""
    from tpv_core import distributed
    from tpv_core.prompts import make_origin
    from tpv_core.tasks import get_task
    from tpv_core.training import TrainConfig, tune_prompt

    ctx = distributed.setup("cuda")
    result = {}
    for shape in args.models:
        bb, plan = build(shape, ctx.device)
        origin = make_origin(bb, seed=0, length=20)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, eval_every=0, lr=0.3)
        tune_prompt(bb, get_task("qnli"), origin, TrainConfig(steps=2, batch_size=args.batch, eval_every=0))
        torch.cuda.synchronize(ctx.device)
        t0 = time.perf_counter()
        res = tune_prompt(bb, get_task("qnli"), origin, cfg)
        torch.cuda.synchronize(ctx.device)
        step_s = (time.perf_counter() - t0) / args.steps
        prompts = distributed.gather_objects(res.prompt.tensor)
        same = all(torch.equal(prompts[0], p) for p in prompts)
        result[shape] = {"ranks": ctx.world_size, "batch_per_rank": args.batch, "step_s": step_s,
                         "prompts_equal_on_all_ranks": same, "device": str(ctx.device)}
        if ctx.is_main:
            print(json.dumps({shape: result[shape]}), flush=True)
    distributed.shutdown()
    return result if ctx.is_main else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default: the device default, 32)")
    ap.add_argument("--ddp", action="store_true", help="the 2-rank run (start under torchrun)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run of the same code)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    from tpv_core.device import default_batch_size

    args.batch = args.batch or default_batch_size(args.device)
    res = ddp(args) if args.ddp else single(args)
    if res is not None and args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
