"""``ties``: TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint mean.

1. trim: keep the ``density`` fraction of entries with the largest magnitude in each vector, zero the rest;
2. elect: per entry, the sign of the weighted sum of the trimmed values;
3. disjoint mean: per entry, the weighted mean over the vectors whose (weighted, trimmed) value is
   non-zero and has the elected sign: sum_i w_i t_i / sum_i |w_i| over those vectors.

With ``normalize=False`` step 3 is the plain sum of the agreeing values. The overall scale is set at
apply time (``tau.apply_to(origin, coef=lambda)``), as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tpv_core.merges.base import MergedVector, check_inputs, origin_ids, weighted_terms
from tpv_core.prompts import TaskPromptVector


def trim(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density * numel) largest-magnitude entries (at least one), zero the others."""
    flat = tensor.reshape(-1)
    k = max(1, int(round(density * flat.numel())))
    if k >= flat.numel():
        return tensor.clone()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs(), k, sorted=False).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(tensor.shape)


def ties_merge(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None, density: float = 0.2,
               normalize: bool = True) -> MergedVector:
    vectors, weights = check_inputs(vectors, weights)
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"TIES density must be in (0, 1], got {density}")
    trimmed = torch.stack([w * trim(v.tensor.float(), float(density)) for v, w in zip(vectors, weights)])
    elected = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    total = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(dim=0)
    if normalize:
        w_abs = torch.tensor([abs(w) for w in weights], dtype=trimmed.dtype).view(-1, 1, 1)
        denom = (agree * w_abs).sum(dim=0)
        total = torch.where(denom > 0, total / torch.where(denom > 0, denom, torch.ones_like(denom)), total)
    return MergedVector(total, vectors[0].backbone, weighted_terms(vectors, weights), origin_ids(vectors),
                        method="ties", options=(("density", float(density)), ("normalize", bool(normalize))))
