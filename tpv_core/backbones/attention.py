"""Attention under CPU bf16: eager for training steps and short inputs, SDPA for long inputs read without
gradients.

PyTorch's CPU SDPA kernel has a slow bf16 backward at prompt-tuning lengths, so training steps run the
model's own eager attention (benchmarks/README.md, "Prototypes": 1.48x per MiniLM step, 1.31x on
SmolLM2). Eager attention, though, materialises a (B, heads, T, T) score tensor per layer, and for long
inputs scored without gradients (IMDB reviews of up to 512 tokens, in evaluation and validation) that
costs more than SDPA's fused forward, in compute and in page faults. So one attention implementation,
registered with transformers under `NAME`, picks per call: SDPA when gradients are off and the keys are at
least `LONG_KEYS` long, the model's eager function otherwise. Training steps and short inputs compute
exactly as before. The choice is made at load time (`use_for`), like the eager switch it replaces, and
never changes while the model is shared; the mask is the eager one (additive float), which SDPA takes too.

``python -m benchmarks.bench_attention`` measures it against eager and SDPA side by side.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

NAME = "tpv_cpu_bf16"
#: key length (soft prompt + input tokens) from which a forward pass without gradients runs SDPA
LONG_KEYS = 256

_registered = False


def _model_eager(module: torch.nn.Module):
    """The eager attention function of the module's own modeling file (None when it has none)."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, **kwargs: Any):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    eager = _model_eager(module)
    if eager is None or (key.shape[-2] >= LONG_KEYS and not torch.is_grad_enabled()):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return eager(module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Make `NAME` known to transformers (attention function, and the eager mask format); idempotent."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    _registered = True


def use_for(model: torch.nn.Module) -> str | None:
    """Switch a freshly loaded model to `NAME` (or, where transformers cannot take it, to plain eager);
    models without the switch keep theirs. Returns the implementation now in use."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        return getattr(getattr(model, "config", None), "_attn_implementation", None)
    for impl in (NAME, "eager"):
        try:
            if impl == NAME:
                register()
            setter(impl)
            break
        except (ValueError, NotImplementedError, ImportError):  # pragma: no cover - an older transformers / architecture
            continue
    return getattr(model.config, "_attn_implementation", None)
