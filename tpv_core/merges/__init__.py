"""Merge methods for task prompt vectors, one small module each (the shape of mergekit's merge_methods).

Every method has the same signature::

    method(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None, **options)
        -> TaskPromptVector

and returns a vector that is applied to an origin with ``tau.apply_to(origin, coef=lambda)``. The
result keeps the (task, weight) ``terms`` of its inputs so tables and plots label it; methods other than
``sum`` return a :class:`MergedVector` that also records the method and its options.
"""

from __future__ import annotations

from typing import Callable

from tpv_core.merges.base import MergedVector, MergeMethod, check_inputs
from tpv_core.merges.dare import dare_merge
from tpv_core.merges.linear import weighted_sum
from tpv_core.merges.ties import ties_merge

MERGE_METHODS: dict[str, MergeMethod] = {
    "sum": weighted_sum,
    "ties": ties_merge,
    "dare": dare_merge,
}


def get_method(name: str) -> Callable:
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; one of {', '.join(MERGE_METHODS)}") from None


__all__ = ["MERGE_METHODS", "MergedVector", "MergeMethod", "check_inputs", "dare_merge", "get_method",
           "ties_merge", "weighted_sum"]
