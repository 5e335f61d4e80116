"""Loading task data: bundled JSONL subsets, the Hugging Face hub, custom tasks; k-shot sampling.

Sources (``load_split(..., source=...)``):

* ``"bundled"``: ``<data>/<folder>/<split>.jsonl`` where ``<data>`` is `tpv_core.paths.tasks_data_dir`
  (``data/tasks`` of a checkout, the package's copy in a non-editable install; ``TPV_DATA_DIR``
  overrides it: it may point at the folder of task folders or at a folder containing ``tasks/``).
* ``"hub"``: ``datasets.load_dataset(hub_id, hub_config)`` split like the paper (the ATTEMPT/MPT
  convention): rows with label -1 (or missing) are dropped; the evaluation source is the hub's
  ``validation`` split (``test`` when there is none; MNLI: ``validation_matched``). If the train
  split has fewer than 10,000 rows, the evaluation source is shuffled (``random.Random(42)``) and
  halved into validation / test; otherwise 1,000 training rows (seeded) are held out as validation
  and the evaluation source is the test set.
* ``"auto"`` (default): bundled when the task has a bundled folder (custom tasks: their own
  files), else hub. Predictable: it never goes online for a task that ships data.

Every returned row is a dict of the original fields plus ``"label"`` (an int; STS-B keeps its float
score). Offline with no local data raises `DataUnavailableError` naming the hub id. Every function takes
a `TaskSpec` (look one up by name with `tpv_core.tasks.get_task`).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from tpv_core.env import offline_requested
from tpv_core.paths import tasks_data_dir
from tpv_core.tasks.custom import split_custom_source
from tpv_core.tasks.local_copy import load_local_split
from tpv_core.tasks.spec import SPLITS, TaskSpec, parse_jsonl
from tpv_core.tasks.splits import (  # noqa: F401 - the split convention, re-exported where it always was
    HUB_HELD_OUT,
    HUB_SEED,
    HUB_SMALL_TRAIN,
    DataUnavailableError,
    _column,
    _hub_label,
    _hub_name,
    _split_names,
    hub_split_plan,
)

SOURCES = ("auto", "bundled", "hub")


def _as_task(task: TaskSpec) -> TaskSpec:
    if not isinstance(task, TaskSpec):
        raise TypeError(f"expected a TaskSpec, got {type(task).__name__} {task!r}; look the task up first: "
                        f"tpv_core.tasks.get_task({task!r})")
    return task


def data_root() -> Path:
    """Folder holding the bundled task folders (`tpv_core.paths.tasks_data_dir`; ``TPV_DATA_DIR`` overrides)."""
    return tasks_data_dir()


def bundled_path(task: TaskSpec, split: str) -> Path | None:
    task = _as_task(task)
    if task.data_dir:
        return Path(task.data_dir) / f"{split}.jsonl"
    if task.bundled:
        return data_root() / task.bundled / f"{split}.jsonl"
    return None


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return parse_jsonl(fh, path, DataUnavailableError, limit)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _normalise(task: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if task.regression:
        out["label"] = float(task.raw_label(row))
    else:
        out["label"] = task.label_of(row)
    if task.label_field != "label":
        out[task.label_field] = out["label"]
    return out


def _check(split: str, source: str, limit: int | None) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def has_local_data(task: TaskSpec) -> bool:
    return bool(task.data_dir or task.bundled or task.source_path)


def load_split(task: TaskSpec, split: str, source: str = "auto", limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of one split: original fields plus ``"label"`` (int; float for regression)."""
    task = _as_task(task)
    _check(split, source, limit)
    if source == "auto":
        source = task.data_source  # what the run bound the task to (tasks.sources.with_source)
    if task.local_copy and source != "hub":
        return load_local_split(task, split, limit)
    if source == "hub" or (source == "auto" and not has_local_data(task)):
        return load_hub_split(task, split, limit=limit)
    if task.source_path and not task.data_dir:
        rows = split_custom_source(task)[split]
        return rows[:limit] if limit is not None else rows
    path = bundled_path(task, split)
    if path is None:
        raise DataUnavailableError(
            f"task {task.name!r} has no bundled data; use source='hub' (hub id {task.hub_id!r})"
        )
    if not path.is_file():
        where = "its store folder" if task.data_dir else f"{data_root()} (set TPV_DATA_DIR to another copy)"
        raise DataUnavailableError(f"task {task.name!r}: missing data file {path}; looked in {where}")
    return [_normalise(task, r) for r in read_jsonl(path, limit)]


# ---------------------------------------------------------------------------------------- hub
def shuffled_rows(rows: Sequence[dict[str, Any]], limit: int | None = None,
                  seed: int | None = 0) -> list[dict[str, Any]]:
    """A copy of ``rows`` shuffled with ``random.Random(seed)`` (order kept when ``seed`` is None), cut to
    the first ``limit``: the rows an evaluation with ``--limit`` scores, and a probe uses."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"a row limit must be a whole number >= 0 (or none for all rows), got {limit!r}")
    out = list(rows)
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out if limit is None else out[:limit]


def load_hub_dataset(task: TaskSpec) -> Any:
    """``datasets.load_dataset(hub_id, hub_config)``, with errors a user can act on."""
    if not task.hub_id:
        raise DataUnavailableError(f"task {task.name!r} has no hub source and no local data")
    try:
        import datasets
    except ImportError:
        raise DataUnavailableError(
            f"loading {_hub_name(task)} from the hub needs the 'datasets' package: pip install datasets"
        ) from None
    args = (task.hub_id, task.hub_config) if task.hub_config else (task.hub_id,)
    try:
        return datasets.load_dataset(*args)
    except Exception as e:  # network, auth, missing cache: all mean "not available here"
        hint = ("you are offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and it is not cached: "
                "go online (unset them)" if offline_requested() else "check the network connection and the hub id")
        raise DataUnavailableError(
            f"task {task.name!r}: cannot load {_hub_name(task)} from the Hugging Face hub; {hint}"
            + (", or use the bundled subset (--source bundled, source='bundled')" if task.bundled else "")
            + f". ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def _take(ds: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    if hasattr(ds, "select") and hasattr(ds, "to_list"):
        return ds.select(list(indices)).to_list()
    return [dict(ds[i]) for i in indices]


def load_hub_split(task: TaskSpec, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    task = _as_task(task)
    _check(split, "hub", limit)
    dd = load_hub_dataset(task)
    hub_split, indices = hub_split_plan(task, dd)[split]
    if limit is not None:
        indices = indices[:limit]
    label_col = task.hub_label_field or task.label_field
    rows = []
    for r in _take(dd[hub_split], indices):
        r = dict(r)
        lab = _hub_label(task, r.get(label_col))
        r["label"] = lab
        if task.label_field != "label":
            r[task.label_field] = lab
        rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------- info
def split_sizes(task: TaskSpec) -> dict[str, int | None]:
    """Row counts of the local splits (None where no local file exists)."""
    task = _as_task(task)
    if task.source_path and not task.data_dir:
        try:
            parts = split_custom_source(task)
            return {s: len(parts[s]) for s in SPLITS}
        except Exception:
            return {s: None for s in SPLITS}
    out: dict[str, int | None] = {}
    for s in SPLITS:
        p = bundled_path(task, s)
        out[s] = _count_lines(p) if p is not None and p.is_file() else None
    return out


def describe_task(task: TaskSpec) -> dict[str, Any]:
    """`TaskSpec.describe` with the row counts of the local splits (``"sizes"``), for task tables."""
    return _as_task(task).describe(sizes=split_sizes(task))


def split_info(task: TaskSpec) -> dict[str, Any]:
    """Row counts, source and provenance caveats of a task's splits, for reports."""
    task = _as_task(task)
    sizes = split_sizes(task)
    n_test = sizes.get("test")
    local = any(v is not None for v in sizes.values())
    info: dict[str, Any] = {
        "task": task.name,
        "title": task.title,
        "paper": task.paper,
        "source": "custom" if task.custom else ("bundled" if local else "hub"),
        "rows": sizes,
        "hub": _hub_name(task),
        "hub_rule": (f"hub: label -1 dropped; train < {HUB_SMALL_TRAIN:,} rows -> the validation split "
                     f"halved into validation/test, else {HUB_HELD_OUT:,} train rows held out as validation "
                     "and the validation (or test) split as test"),
        "caveats": list(task.caveats),
    }
    if n_test:
        # standard error of an accuracy near 50%, in points
        info["test_se_points"] = round(100 * math.sqrt(0.25 / n_test), 1)
        info["small_test"] = n_test < 300
    if not local:
        info["caveats"] = info["caveats"] + ["no local data: loaded from the hub (needs network)"]
    return info


# ---------------------------------------------------------------------------------------- k-shot
def _stratum(task: TaskSpec, row: Mapping[str, Any]) -> int:
    if task.regression:
        return int(math.floor(float(task.raw_label(row))))
    return task.label_of(row)


def k_shot(rows: Sequence[Mapping[str, Any]], k: int, seed: int, task: TaskSpec) -> list[dict[str, Any]]:
    """``k`` rows in total, stratified by label, spread as evenly as possible over the classes.

    Every class gets ``k // C`` rows; the ``k % C`` extra rows go to classes drawn with
    ``random.Random(seed)``. Classes are all the task's labels (regression: the integer parts of
    the scores present in ``rows``). Deterministic for a given seed and row order; the result is
    shuffled with the same generator. Raises ValueError when ``k`` exceeds the rows or a class has
    too few rows.
    """
    task = _as_task(task)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if k > len(rows):
        raise ValueError(f"k={k} exceeds the {len(rows)} rows available for task {task.name!r}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_class[_stratum(task, r)].append(i)
    classes = sorted(by_class) if task.regression else list(range(task.num_labels))
    rng = random.Random(seed)
    base, extra = divmod(k, len(classes))
    quota = {c: base for c in classes}
    for c in rng.sample(classes, extra):
        quota[c] += 1
    short = [c for c in classes if len(by_class.get(c, ())) < quota[c]]
    if short:
        def name(c: int) -> str:
            return f"score {c}..{c + 1}" if task.regression else repr(task.label_names[c])

        detail = ", ".join(f"{name(c)} has {len(by_class.get(c, ()))} rows, needs {quota[c]}" for c in short)
        raise ValueError(f"k-shot k={k} for task {task.name!r}: too few rows per class ({detail})")
    chosen: list[int] = []
    for c in classes:
        chosen += rng.sample(by_class.get(c, []), quota[c])
    rng.shuffle(chosen)
    return [dict(rows[i]) for i in chosen]

