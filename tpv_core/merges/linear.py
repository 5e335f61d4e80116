"""``sum``: the paper's combination, sum_i w_i tau_i (Belanec et al.; task arithmetic, Ilharco et al.)."""

from __future__ import annotations

from typing import Sequence

from tpv_core.merges.base import check_inputs
from tpv_core.prompts import TaskPromptVector


def weighted_sum(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None) -> TaskPromptVector:
    """sum_i weights[i] * vectors[i] (weights default to 1)."""
    vectors, weights = check_inputs(vectors, weights)
    return TaskPromptVector.sum(vectors, weights)
