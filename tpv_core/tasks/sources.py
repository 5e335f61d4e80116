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
from pathlib import Path
from typing import Any

from tpv_core.tasks.data import SOURCES, data_root, has_local_data, load_hub_dataset, split_sizes
from tpv_core.tasks.local_copy import _label_column, _rows, load_local_split, local_split_plan, read_local_copy
from tpv_core.tasks.spec import TaskSpec
from tpv_core.tasks.splits import DataUnavailableError, _hub_name, hub_split_plan

__all__ = ["data_record", "describe_data", "effective_source", "load_local_split", "task_folder", "with_source"]


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
