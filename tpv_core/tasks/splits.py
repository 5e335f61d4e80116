"""The paper's split convention (ATTEMPT/MPT) for data that does not come in train / validation / test:
the hub's datasets and incomplete local copies (`tpv_core.tasks.sources`). See `hub_split_plan`."""

from __future__ import annotations

import random
from typing import Any

from tpv_core.tasks.spec import TaskSpec

HUB_SMALL_TRAIN = 10_000
HUB_HELD_OUT = 1_000
HUB_SEED = 42


class DataUnavailableError(RuntimeError):
    """The requested split cannot be loaded here (offline, no bundled copy, missing files)."""


def _hub_name(task: TaskSpec) -> str:
    return task.hub_id + (f" ({task.hub_config})" if task.hub_config else "") if task.hub_id else "none"


def _column(ds: Any, col: str) -> list[Any]:
    try:
        return list(ds[col])
    except (KeyError, TypeError, IndexError):
        return [r.get(col) for r in ds]


def _hub_label(task: TaskSpec, v: Any) -> float | int | None:
    if v is None:
        return None
    if task.hub_label_map and isinstance(v, str):
        return dict(task.hub_label_map).get(v)
    if task.regression:
        return float(v)
    if isinstance(v, str):
        if v in task.label_names:
            return task.label_names.index(v)
        try:
            v = int(v)
        except ValueError:
            return None
    i = int(v)
    return i if 0 <= i < task.num_labels else None


def _split_names(dd: Any) -> list[str]:
    return list(dd.keys())


def hub_split_plan(task: TaskSpec, dd: Any, seed: int = HUB_SEED) -> dict[str, tuple[str, list[int]]]:
    """For each of train/validation/test: (hub split name, row indices), by the paper's rule."""
    names = _split_names(dd)
    label_col = task.hub_label_field or task.label_field
    if task.hub_train_split not in names:
        raise DataUnavailableError(f"{_hub_name(task)} has no {task.hub_train_split!r} split (has {names})")

    def valid(split: str) -> list[int]:
        return [i for i, v in enumerate(_column(dd[split], label_col)) if _hub_label(task, v) is not None]

    train_idx = valid(task.hub_train_split)
    candidates = [task.hub_eval_split] if task.hub_eval_split else ["validation", "test"]
    eval_name, eval_idx = None, []
    for c in candidates:
        if c in names:
            eval_idx = valid(c)
            if eval_idx:
                eval_name = c
                break
    if eval_name is None:
        raise DataUnavailableError(f"{_hub_name(task)}: no labelled evaluation split among {candidates} (has {names})")
    rng = random.Random(seed)
    tr = task.hub_train_split
    if len(train_idx) < HUB_SMALL_TRAIN:
        shuffled = list(eval_idx)
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        return {"train": (tr, train_idx), "validation": (eval_name, sorted(shuffled[:half])),
                "test": (eval_name, sorted(shuffled[half:]))}
    shuffled = list(train_idx)
    rng.shuffle(shuffled)
    return {"train": (tr, sorted(shuffled[HUB_HELD_OUT:])), "validation": (tr, sorted(shuffled[:HUB_HELD_OUT])),
            "test": (eval_name, eval_idx)}
