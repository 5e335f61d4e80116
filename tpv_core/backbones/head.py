"""Vocabulary logits in fp32 from a frozen head of any dtype, without an fp32 copy of the head.

With bf16 weights (a GPU) ``head.weight.float()`` would copy the whole head on every call (2.1 GB for
Llama-3's 128k x 4096 head), and autograd through such a cast would keep the copy for backward.
"""

from __future__ import annotations

import torch

HEAD_CHUNK_ROWS = 8192  # vocabulary rows cast to fp32 at a time when a low-precision head cannot be read in fp32


def _fp32_product(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``h @ weight.T`` in fp32 for a low-precision ``weight`` (V, d), no gradient tracking: one matmul with fp32
    accumulation and output on CUDA where torch has it, else vocabulary chunks cast to fp32 one at a time."""
    if weight.device.type == "cuda":
        try:
            return torch.mm(h.to(weight.dtype), weight.t(), out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # a torch without mm(out_dtype=) for this dtype
            pass
    return torch.cat([h @ weight[s: s + HEAD_CHUNK_ROWS].float().t()
                      for s in range(0, weight.shape[0], HEAD_CHUNK_ROWS)], dim=-1)


class _Fp32Head(torch.autograd.Function):
    """Logits in fp32 from a frozen low-precision head, keeping only a reference to the head for backward
    (autograd through a cast would keep an fp32 copy of every chunk: the whole head, 2.1 GB for Llama-3)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return _fp32_product(h, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_h = None
        if ctx.needs_input_grad[0]:
            grad_h = sum(grad[:, s: s + HEAD_CHUNK_ROWS] @ weight[s: s + HEAD_CHUNK_ROWS].float()
                         for s in range(0, weight.shape[0], HEAD_CHUNK_ROWS))
        return grad_h, None  # the head is frozen


def fp32_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``h @ weight.T (+ bias)`` with an fp32 result, for an fp32 ``h`` (N, d) and a frozen weight (V, d) of any
    float dtype, without an fp32 copy of the whole weight (neither made nor kept for backward)."""
    if weight.dtype == torch.float32:
        return torch.nn.functional.linear(h, weight, bias)
    out = _Fp32Head.apply(h, weight)
    return out if bias is None else out + bias
