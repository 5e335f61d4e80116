"""Reading a full local copy of a task (``--data-dir DIR`` -> ``DIR/<task>/``), see `tpv_core.tasks.sources`.

Files ``train`` / ``validation`` / ``test`` as JSONL, CSV or Parquet are used as they are when all three
are there with labels; otherwise (a split missing, an unlabelled test split, a ``datasets`` ``save_to_disk``
copy of the hub) the rows are split by the paper's convention (`tpv_core.tasks.splits.hub_split_plan`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tpv_core.tasks.spec import SPLITS, TaskSpec, parse_jsonl
from tpv_core.tasks.splits import DataUnavailableError, _hub_label, hub_split_plan

FILE_FORMATS = (".jsonl", ".csv", ".parquet")


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return parse_jsonl(fh, path, DataUnavailableError)
    import pandas as pd

    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as e:  # a malformed file: say which one
        raise DataUnavailableError(f"cannot read {path}: {type(e).__name__}: {str(e)[:200]}") from None
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict(orient="records")


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def read_local_copy(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(kind, split name -> rows or a ``datasets.Dataset``) of a task folder; kind ``files`` or ``save_to_disk``."""
    folder = Path(folder)
    if is_saved_dataset(folder):
        try:
            import datasets
        except ImportError:
            raise DataUnavailableError(f"{folder} is a datasets save_to_disk folder: pip install datasets") from None
        loaded = datasets.load_from_disk(str(folder))
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        return "save_to_disk", parts
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in FILE_FORMATS:
            if path.stem in files:
                raise DataUnavailableError(f"{folder}: split {path.stem!r} is there twice ({files[path.stem].name} and "
                                           f"{path.name}); keep one")
            files[path.stem] = path
    if "train" not in files:
        raise DataUnavailableError(
            f"{folder}: no train split (expected train.jsonl, train.csv or train.parquet, or a datasets "
            f"save_to_disk folder); found {sorted(p.name for p in folder.iterdir())}")
    return "files", {name: _read_file(p) for name, p in files.items()}


def _label_column(task: TaskSpec, parts: dict[str, Any]) -> str:
    first = parts["train"]
    cols = set(first.column_names) if hasattr(first, "column_names") else set(first[0] if len(first) else {})
    for c in (task.hub_label_field, task.label_field, "label"):
        if c and c in cols:
            return c
    raise DataUnavailableError(f"task {task.name!r}: the local copy has no label column "
                               f"({task.hub_label_field or task.label_field!r} or 'label'); has {sorted(cols)}")


def _labelled(task: TaskSpec, rows: list[dict[str, Any]], col: str) -> bool:
    return any(_hub_label(task, r.get(col)) is not None for r in rows)


def _rows(task: TaskSpec, table: Any, indices: list[int] | None, col: str, limit: int | None) -> list[dict[str, Any]]:
    if indices is None:
        indices = [i for i, r in enumerate(table) if _hub_label(task, r.get(col)) is not None]
    if limit is not None:
        indices = indices[:limit]
    picked = table.select(indices).to_list() if hasattr(table, "select") else [table[i] for i in indices]
    out = []
    for r in picked:
        r = dict(r)
        r["label"] = _hub_label(task, r.get(col))
        if task.label_field != "label":
            r[task.label_field] = r["label"]
        out.append(r)
    return out


def local_split_plan(task: TaskSpec, kind: str, parts: dict[str, Any]) -> dict[str, tuple[str, list[int] | None]]:
    """split -> (part name, row indices; None = every labelled row) for a local copy."""
    col = _label_column(task, parts)
    if kind == "files" and all(s in parts and _labelled(task, parts[s], col) for s in SPLITS):
        return {s: (s, None) for s in SPLITS}
    names = list(parts)
    convention = dataclasses.replace(
        task, hub_train_split="train", hub_label_field=col,
        hub_eval_split=task.hub_eval_split if task.hub_eval_split in names else None)
    return hub_split_plan(convention, parts)


def load_local_split(task: TaskSpec, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of one split of ``task``'s full local copy (``task.local_copy``), split as described above."""
    if not task.local_copy:
        raise ValueError(f"task {task.name!r} has no local copy bound (tasks.sources.with_source)")
    kind, parts = read_local_copy(task.local_copy)
    part, indices = local_split_plan(task, kind, parts)[split]
    return _rows(task, parts[part], indices, _label_column(task, parts), limit)
