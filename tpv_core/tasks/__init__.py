"""Tasks: the paper's NLU tasks and user tasks, their data, templates and metrics.

    from tpv_core.tasks import get_task, load_split, compute_metrics
    task = get_task("sst-2")
    rows = load_split(task, "validation")                 # bundled subset, offline
    text = task.format(rows[0], "decoder")                # or "seq2seq" / "encoder"
    scores = compute_metrics(task, predictions, rows)

Modules, each importing only those before it: ``spec`` (TaskSpec, LabelSet, task_key) <- ``custom``
(reading a user's files) <- ``data`` (loading splits) <- ``registry`` (lookup by name, custom-task
persistence); ``builtin`` is the table of built-in tasks, ``metrics`` the scores.
"""

from tpv_core.tasks.custom import TaskFileError
from tpv_core.tasks.data import (
    DataUnavailableError,
    data_root,
    describe_task,
    k_shot,
    load_hub_split,
    load_split,
    split_info,
    split_sizes,
)
from tpv_core.tasks.metrics import compute_metrics, exact_match, normalise_text, text_to_label
from tpv_core.tasks.registry import (
    ALIASES,
    BUILTIN_TASKS,
    PAPER_TASKS,
    UnknownTaskError,
    find_custom_task,
    get_task,
    is_builtin,
    list_custom_tasks,
    list_tasks,
    make_custom_task,
    register_custom_task,
    remove_custom_task,
)
from tpv_core.tasks.spec import GRID, LabelSet, TaskSpec, Templates, grid_index, grid_value, task_key

__all__ = [
    "ALIASES", "BUILTIN_TASKS", "GRID", "PAPER_TASKS",
    "DataUnavailableError", "LabelSet", "TaskFileError", "TaskSpec", "Templates", "UnknownTaskError",
    "compute_metrics", "data_root", "describe_task", "exact_match", "find_custom_task", "get_task", "grid_index",
    "grid_value", "is_builtin", "k_shot", "list_custom_tasks", "list_tasks", "load_hub_split",
    "load_split", "make_custom_task", "normalise_text", "register_custom_task",
    "remove_custom_task", "split_info", "split_sizes", "task_key", "text_to_label",
]
