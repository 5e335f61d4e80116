"""Shared helpers: machine description, interleaved timing, matmul peaks, model FLOP formulas, fixed
batches and one prompt-tuning step.

Every comparison in this folder runs its contenders in the same process, interleaved round by round
(A, B, C, A, B, C, ...), and reports medians and ratios: the machines we run on are shared, so an
absolute wall time alone says little.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tpv_core.backbones import Backbone, LabelSet
from tpv_core.tasks import TaskSpec, get_task, load_split


def now() -> float:
    return time.perf_counter()


def sync(device: torch.device | str | None = None) -> None:
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else float("nan")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="ignore"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="ignore"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, spinning)"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": ver("transformers"),
        "peft": ver("peft"),
        "accelerate": ver("accelerate"),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def interleave(contenders: dict[str, Callable[[], Any]], rounds: int,
               log: Callable[[str], None] | None = None) -> dict[str, list[Any]]:
    """Run every contender once per round, in the same order each round (A, B, C, A, B, C, ...).

    Returns the list of results per contender (one per round)."""
    out: dict[str, list[Any]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            res = fn()
            out[name].append(res)
            if log is not None:
                log(f"    round {r + 1}/{rounds} {name}: {summarise(res)}")
    return out


def summarise(res: Any) -> str:
    if isinstance(res, dict):
        keys = [k for k in ("examples_per_s", "step_s", "s", "gflops", "first_s", "full_s") if k in res]
        return ", ".join(f"{k}={res[k]:.3g}" for k in keys if isinstance(res[k], (int, float)))
    if isinstance(res, float):
        return f"{res:.3g}"
    return str(res)[:80]


# ---- matmul peak ----------------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5, device: str | torch.device = "cpu") -> float:
    """GFLOP/s of an n x n @ n x n matmul in ``dtype`` (best of ``reps`` after one warm-up), on the
    current torch thread count. 2 n^3 FLOPs per product."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = now()
        a @ b
        sync(device)
        best = min(best, now() - t)
    return 2 * n ** 3 / best / 1e9


def peak(bb: Backbone, n: int = 2048, reps: int = 3) -> dict[str, Any]:
    """Measured matmul peaks for ``bb``'s device: fp32 always, bf16 only when ``bb`` computes in bf16
    (on a CPU without native bf16 a 2048^3 bf16 product takes about a minute: 0.3 GFLOP/s measured on an
    AVX2-only EPYC). ``peak_gflops``: the peak of the precision the backbone runs in, the MFU reference."""
    bf16 = bb.compute_dtype == torch.bfloat16
    out: dict[str, Any] = {"fp32_gflops": matmul_gflops(torch.float32, n, reps, bb.device),
                           "bf16_gflops": matmul_gflops(torch.bfloat16, n, reps, bb.device) if bf16 else None,
                           "precision": "bf16" if bf16 else "fp32"}
    out["peak_gflops"] = out["bf16_gflops"] if bf16 else out["fp32_gflops"]
    return out


def median_dict(ds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of dicts with the same keys (one per round); other values (str, None) from the first."""
    return {k: median([d[k] for d in ds]) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in ds[0].items()}


# ---- model FLOPs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopModel:
    """What the FLOP formulas need to know about a frozen transformer.

    ``n_matmul``: weights of the Linear layers inside the transformer blocks (attention projections
    and MLP); embeddings, the LM head and BERT's unused pooler are left out. ``n_layers`` and
    ``d_attn`` (= heads x head_dim) size the attention score/value products.
    """

    n_matmul: int
    n_layers: int
    d_attn: int
    vocab: int
    d_model: int

    def train_flops(self, seq_lens: list[int], head_tokens: int = 0) -> float:
        """Model FLOPs of one prompt-tuning step (forward + backward) over rows of real length T_i
        (soft prompt + input tokens, padding excluded):

            sum_i [ 4 N T_i + 12 n_layers d_attn T_i^2 ] + 4 V d * head_tokens

        Forward: 2 N per token for the matmuls, 4 n_layers d_attn T per token for QK^T and AV.
        Backward with a frozen model: activation gradients only (dX = dY W^T, the same size as the
        forward matmul), no weight gradients: 2 N per token instead of the usual 4 N, so 4 N in all
        (not 6 N); the attention products have only activation inputs, so their backward costs 2x
        their forward (dQ, dK from QK^T; dA, dV from AV): 12 n_layers d_attn T per token in all.
        ``head_tokens``: positions whose vocabulary logits are computed (decoder answer tokens),
        2 V d forward + 2 V d backward each.
        """
        return float(sum(4 * self.n_matmul * t + 12 * self.n_layers * self.d_attn * t * t for t in seq_lens)
                     + 4 * self.vocab * self.d_model * head_tokens)

    def forward_flops(self, seq_lens: list[int], head_tokens: int = 0) -> float:
        """Forward only (evaluation): 2 N T + 4 n_layers d_attn T^2 per row + 2 V d per scored position."""
        return float(sum(2 * self.n_matmul * t + 4 * self.n_layers * self.d_attn * t * t for t in seq_lens)
                     + 2 * self.vocab * self.d_model * head_tokens)


def flop_model(model: torch.nn.Module) -> FlopModel:
    cfg = model.config
    skip = set()
    for name in ("lm_head", "pooler"):
        if hasattr(model, name) and getattr(model, name) is not None:
            skip.update(id(p) for p in getattr(model, name).parameters())
    n = 0
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "pooler" not in mod_name and "lm_head" not in mod_name:
            if id(mod.weight) not in skip:
                n += mod.weight.numel()
    n_layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "num_layers", 0))
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "num_heads", 0))
    d_model = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0))
    head_dim = int(getattr(cfg, "head_dim", 0) or (d_model // max(heads, 1)))
    return FlopModel(n, n_layers, heads * head_dim, int(cfg.vocab_size), d_model)


# ---- fixed batches and one training step ---------------------------------------------------------
def task_batches(bb: Backbone, task_name: str, n_batches: int, batch_size: int, seed: int = 1,
                 split: str = "train") -> tuple[TaskSpec, list[tuple[Any, torch.Tensor]]]:
    """``n_batches`` batches of ``batch_size`` random rows of ``split`` (seeded), collated by ``bb``."""
    import random

    task = get_task(task_name)
    rows = load_split(task, split)[:]
    random.Random(seed).shuffle(rows)
    rows = rows[: n_batches * batch_size]
    ids = bb.tokenize([task.format(r, bb.family) for r in rows])
    targets = [task.label_of(r) for r in rows]
    out = []
    for i in range(n_batches):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        out.append((bb.collate(ids[sl], max_length=256), torch.tensor(targets[sl], device=bb.device)))
    return task, out


def train_step_fn(bb: Backbone, labels: LabelSet, batches: list[tuple[Any, torch.Tensor]],
                  L: int = 20) -> Callable[[], dict[str, Any]]:
    """One call = one pass over ``batches``, one prompt-tuning step per batch as ``tune_prompt`` does it:
    ``Backbone.loss``, backward, gradient clipping, AdamW on an L-token prompt. Returns seconds per step."""
    prompt = torch.nn.Parameter(bb.input_embeddings()[100:100 + L].clone().to(bb.device))
    opt = torch.optim.AdamW([prompt], lr=0.05, weight_decay=1e-5)

    def run() -> dict[str, Any]:
        sync(bb.device)
        t0 = now()
        losses = []
        for batch, targets in batches:
            loss = bb.loss(batch, prompt, labels, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([prompt], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        sync(bb.device)
        return {"s": (now() - t0) / len(batches), "loss": statistics.mean(losses)}

    return run
