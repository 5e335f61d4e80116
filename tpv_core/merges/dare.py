"""``dare``: DARE (Yu et al., 2024, "Language Models are Super Mario"): drop and rescale, then sum.

Each entry of each vector is dropped with probability ``drop`` and the survivors are rescaled by
1 / (1 - drop), so every vector keeps its expected value; the results are summed with the weights.
Deterministic: the mask of vector i depends only on (``seed``, i).
"""

from __future__ import annotations

from typing import Sequence

import torch

from tpv_core.merges.base import MergedVector, check_inputs, generator, origin_ids, weighted_terms
from tpv_core.prompts import TaskPromptVector


def drop_and_rescale(tensor: torch.Tensor, drop: float, gen: torch.Generator) -> torch.Tensor:
    if drop == 0.0:
        return tensor.clone()
    keep = torch.rand(tensor.shape, generator=gen) >= drop
    return torch.where(keep, tensor / (1.0 - drop), torch.zeros_like(tensor))


def dare_merge(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None, drop: float = 0.9,
               seed: int = 0) -> MergedVector:
    vectors, weights = check_inputs(vectors, weights)
    drop = float(drop)
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"DARE drop probability must be in [0, 1), got {drop}")
    sparse = [TaskPromptVector(drop_and_rescale(v.tensor.float(), drop, generator(seed, i, "dare")), v.backbone,
                               v.terms, v.origin_ids) for i, v in enumerate(vectors)]
    total = TaskPromptVector.sum(sparse, weights)
    return MergedVector(total.tensor, vectors[0].backbone, weighted_terms(vectors, weights), origin_ids(vectors),
                        method="dare", options=(("drop", drop), ("seed", int(seed))))
