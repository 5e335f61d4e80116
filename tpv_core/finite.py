"""Finite numbers only: the checks that keep NaN and infinity out of weights, coefficients, lambdas and
prompt tensors (a prompt with a non-finite value is never evaluated, saved or exported)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["NonFiniteValueError", "require_finite", "require_finite_number"]


class NonFiniteValueError(ValueError):
    """A weight, coefficient, lambda or prompt value that is NaN or infinite."""


def require_finite_number(value: Any, what: str) -> float:
    """``value`` as a float, or a `NonFiniteValueError` naming ``what`` and the value given."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise NonFiniteValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise NonFiniteValueError(f"{what} must be a finite number, got {value!r}")
    return x


def require_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """``tensor``, unless it holds NaN or infinity: then a `NonFiniteValueError` naming ``what``. A prompt
    with a non-finite value is never evaluated, saved or exported."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteValueError(f"{what} holds {bad} NaN or infinite value(s) (out of {tensor.numel()}); check the "
                                  "weights and coefficients that made it")
    return tensor
