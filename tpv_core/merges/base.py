"""What every merge method shares: input checks, the result type, a per-vector random generator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from tpv_core.prompts import PromptMismatchError, TaskPromptVector, require_finite, require_finite_number


class MergeMethod(Protocol):
    def __call__(self, vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None,
                 **options: Any) -> TaskPromptVector: ...


@dataclass(frozen=True)
class MergedVector(TaskPromptVector):
    """A task prompt vector made by a merge method: ``terms`` as for a weighted sum, plus the method and
    its options (``method_label`` reads e.g. ``ties(density=0.2): mnli + qnli``). Arithmetic on it
    gives plain :class:`TaskPromptVector` objects."""

    method: str = "sum"
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def method_label(self) -> str:
        opts = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.options)
        return f"{self.method}({opts}): {self.label}"

    def __repr__(self) -> str:
        return f"MergedVector({self.method_label}, backbone={self.backbone!r}, shape={self.shape})"


def check_inputs(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None) -> tuple[list, list[float]]:
    """The vectors as a list and one float weight per vector (default 1.0); clear errors otherwise."""
    vectors = list(vectors)
    if not vectors:
        raise ValueError("a merge needs at least one task prompt vector")
    for v in vectors:
        if not isinstance(v, TaskPromptVector):
            raise TypeError(f"merge methods take TaskPromptVector objects, got {type(v).__name__}")
    if weights is None:
        weights = [1.0] * len(vectors)
    weights = list(weights)
    if len(weights) != len(vectors):
        raise ValueError(f"got {len(weights)} weights for {len(vectors)} vectors")
    weights = [require_finite_number(w, f"weight {i + 1} ({v.label})") for i, (v, w) in enumerate(zip(vectors, weights))]
    for v in vectors:
        require_finite(v.tensor, f"task prompt vector {v.label}")
    first = vectors[0]
    for v in vectors[1:]:
        if v.backbone != first.backbone:
            raise PromptMismatchError(f"cannot merge vectors of different backbones: {first.label} is on "
                                      f"{first.backbone!r}, {v.label} is on {v.backbone!r}")
        if v.shape != first.shape:
            raise PromptMismatchError(f"cannot merge vectors of different shapes: {first.label} is {first.shape}, "
                                      f"{v.label} is {v.shape}")
    return vectors, weights


def weighted_terms(vectors: Sequence[TaskPromptVector], weights: Sequence[float]) -> tuple[tuple[str, float], ...]:
    merged: dict[str, float] = {}
    for v, w in zip(vectors, weights):
        for task, tw in v.terms:
            merged[task] = merged.get(task, 0.0) + float(tw) * float(w)
    return tuple(merged.items())


def origin_ids(vectors: Sequence[TaskPromptVector]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(o for v in vectors for o in v.origin_ids))


def generator(seed: int, index: int, label: str) -> torch.Generator:
    """A generator fixed by (seed, position of the vector, method): independent of anything drawn before."""
    digest = hashlib.sha256(f"{label}/{int(seed)}/{int(index)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
