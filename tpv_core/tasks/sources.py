"""Where a run reads its task data: the bundled subsets, a folder of full local copies, or the hub.

``--source auto|bundled|hub`` and ``--data-dir DIR`` (the flag form of ``TPV_DATA_DIR``) are bound to a
task once per run with `with_source`; `load_split` then reads from there without every caller passing
the choice along. A full local copy is one folder per task under ``DIR`` (named like the task, its bundled
folder or its hub config: ``DIR/mnli``) holding either

* ``train`` / ``validation`` / ``test`` files as JSONL (``.jsonl``), CSV (``.csv``) or Parquet
  (``.parquet``), with the hub's field names; or
* a ``datasets`` ``save_to_disk`` folder (a saved ``DatasetDict``, or a single ``Dataset`` = train).

When all three splits are files with labels they are used as they are. Otherwise (a split missing, an
unlabelled test split as on GLUE, or a ``save_to_disk`` copy of the hub) the rows are split by the same
paper convention ``source="hub"`` uses (`tpv_core.tasks.data.hub_split_plan`): label -1 dropped; train
below 10,000 rows -> the evaluation split halved into validation / test; else 1,000 training rows held
out as validation and the evaluation split used as test.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from tpv_core.tasks.data import (
    SOURCES,
    DataUnavailableError,
    _hub_label,
    _hub_name,
    data_root,
    has_local_data,
    hub_split_plan,
    load_hub_dataset,
    split_sizes,
)
from tpv_core.tasks.spec import SPLITS, TaskSpec, parse_jsonl

FILE_FORMATS = (".jsonl", ".csv", ".parquet")


def with_source(task: TaskSpec, source: str = "auto", data_dir: str | Path | None = None) -> TaskSpec:
    """``task`` bound to a data source (and a folder of full local copies) for the rest of a run."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
    if data_dir is None:
        return dataclasses.replace(task, data_source=source, local_copy=None)
    if source == "hub":
        raise ValueError("--data-dir reads local copies and --source hub reads the hub: drop one of them")
    return dataclasses.replace(task, data_source=source, local_copy=str(task_folder(task, data_dir)))


def task_folder(task: TaskSpec, data_dir: str | Path) -> Path:
    """The folder of ``task`` under a data directory (by task name, bundled folder or hub config)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataUnavailableError(f"--data-dir {root} is not a folder; give the folder that holds one folder per task")
    names = [n for n in dict.fromkeys((task.name, task.bundled, task.hub_config)) if n]
    candidates = [base / n for base in (root, root / "tasks") for n in names]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise DataUnavailableError(
        f"task {task.name!r}: no folder for it under {root} (looked for {', '.join(str(c) for c in candidates)}); "
        f"put its train/validation/test files (JSONL, CSV or Parquet) or a datasets save_to_disk folder there, "
        f"or use --source bundled for the bundled subset or --source hub for {_hub_name(task)}")


# ---------------------------------------------------------------------------------------- reading
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


# ---------------------------------------------------------------------------------------- describing
def effective_source(task: TaskSpec) -> str:
    """Where `load_split(task, ...)` reads: ``local`` (a --data-dir copy), ``bundled``, ``custom`` or ``hub``."""
    if task.local_copy and task.data_source != "hub":
        return "local"
    if task.data_source == "hub" or (task.data_source == "auto" and not has_local_data(task)):
        return "hub"
    return "custom" if task.custom else "bundled"


def _where(task: TaskSpec, source: str) -> dict[str, Any]:
    if source == "local":
        return {"path": task.local_copy}
    if source == "hub":
        return {"hub_id": task.hub_id, "hub_config": task.hub_config}
    if source == "custom":
        return {"path": task.data_dir or task.source_path}
    return {"path": str(data_root() / task.bundled) if task.bundled else None}


def data_record(task: TaskSpec, train_rows: int | None = None, validation_rows: int | None = None) -> dict[str, Any]:
    """What a prompt's metadata says about its data: source, path or hub id, rows used."""
    source = effective_source(task)
    return {"source": source, **_where(task, source), "rows": {"train": train_rows, "validation": validation_rows}}


def describe_data(task: TaskSpec) -> dict[str, Any]:
    """Source, path or hub id and the row count of every split, without a model (for ``--dry-run``).
    The hub source downloads (or reads the cache of) the dataset; offline that is a `DataUnavailableError`."""
    source = effective_source(task)
    if source == "local":
        kind, parts = read_local_copy(task.local_copy)
        plan = local_split_plan(task, kind, parts)
        col = _label_column(task, parts)
        rows = {s: (len(idx) if idx is not None else len(_rows(task, parts[p], None, col, None)))
                for s, (p, idx) in plan.items()}
        return {"source": source, **_where(task, source), "format": kind, "rows": rows}
    if source == "hub":
        dd = load_hub_dataset(task)
        rows = {s: len(idx) for s, (_, idx) in hub_split_plan(task, dd).items()}
        return {"source": source, **_where(task, source), "rows": rows}
    return {"source": source, **_where(task, source), "rows": split_sizes(task)}


def steps_per_epoch(train_rows: int, batch_size: int, world: int = 1) -> int:
    return max(1, math.ceil(train_rows / (batch_size * max(1, world))))
