"""A training run's budget over time: steps from an epoch budget, warmup length, the learning-rate schedule.

Kept apart from the loop (`tpv_core.training`) and free of its imports: the functions take a TrainConfig
(or its numbers) and return numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable


def epoch_steps(epochs: float | None, steps: int | None, train_rows: int | None, batch_size: int,
                world: int = 1) -> tuple[int | None, int | None]:
    """(steps, steps per epoch). With ``epochs`` and no ``steps``: steps = ceil(epochs x batches per epoch) for
    ``train_rows`` rows and a global batch of ``batch_size * world``. Without ``epochs``: (steps, None)."""
    if epochs is None:
        return steps, None
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    per_epoch = max(1, math.ceil(train_rows / (batch_size * max(1, world)))) if train_rows is not None else None
    if steps is None:
        if per_epoch is None:
            raise ValueError("an epoch budget needs the number of training rows (or give steps)")
        steps = math.ceil(epochs * per_epoch)
    return steps, per_epoch


def warmup_steps(cfg: Any) -> int:
    """Warmup length of a resolved config: ``warmup_steps`` when set, else ``warmup_ratio`` of the steps."""
    return int(cfg.warmup_steps) if cfg.warmup_steps is not None else int(cfg.warmup_ratio * cfg.steps)


def lr_schedule(cfg: Any) -> Callable[[int], float]:
    """Learning-rate factor at a step: linear warmup to 1, then linear decay to 0 at the last step."""
    warmup = warmup_steps(cfg)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warmup))

    return factor
