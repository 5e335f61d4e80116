"""Finding tasks by name: the built-in table (`tpv_core.tasks.builtin`), aliases, and custom tasks
registered under a store root.

Custom-task persistence lives here, on top of reading (`tpv_core.tasks.custom`) and loading
(`tpv_core.tasks.data`): `register_custom_task` writes the spec and a normalised copy of the data under
``<root>/_tasks/<name>/`` (``spec.json``, ``train/validation/test.jsonl``; atomic writes, spec last), so
`get_task(name, root)` and `load_split` find it after a restart; a registered name is redefined (other
labels, settings or data) only with ``replace=True``. The modules import downwards only:
spec <- custom <- data <- registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from tpv_core.atomic import atomic_write_text
from tpv_core.tasks.builtin import ALIASES, BUILTIN_TASKS, PAPER_TASKS
from tpv_core.tasks.custom import TaskFileError, read_custom_task, valid_task_name
from tpv_core.tasks.data import load_split
from tpv_core.tasks.spec import SPLITS, TaskSpec, task_key

__all__ = ["ALIASES", "BUILTIN_TASKS", "CUSTOM_DIR", "PAPER_TASKS", "UnknownTaskError", "find_custom_task",
           "get_task", "is_builtin", "list_custom_tasks", "list_tasks", "make_custom_task", "register_custom_task",
           "remove_custom_task", "task_key"]

CUSTOM_DIR = "_tasks"
SPEC_SCHEMA = 1


class UnknownTaskError(KeyError):
    """Unknown task name; the message lists the known tasks and the closest matches."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


_BY_KEY: dict[str, TaskSpec] = {task_key(s.name): s for s in BUILTIN_TASKS}
for _alias, _target in ALIASES.items():
    _BY_KEY.setdefault(task_key(_alias), _BY_KEY[task_key(_target)])
assert len({task_key(s.name) for s in BUILTIN_TASKS}) == len(BUILTIN_TASKS)


def is_builtin(name: str) -> bool:
    return task_key(name) in _BY_KEY


def get_task(name: str | TaskSpec, root: str | Path | None = None) -> TaskSpec:
    """A task by name (case-insensitive, aliases), built-in or custom under store ``root``."""
    if isinstance(name, TaskSpec):
        return name
    spec = _BY_KEY.get(task_key(name))
    if spec is not None:
        return spec
    if root is not None:
        custom = find_custom_task(name, root)
        if custom is not None:
            return custom
    raise UnknownTaskError(_unknown_message(name, root))


def _unknown_message(name: str, root: str | Path | None) -> str:
    known = [s.name for s in list_tasks(root)]
    candidates = {s: s for s in known}
    candidates.update({a: t for a, t in ALIASES.items()})
    close = difflib.get_close_matches(str(name).lower(), list(candidates), n=3, cutoff=0.5)
    suggestion = sorted({candidates[c] for c in close}, key=[candidates[c] for c in close].index)
    msg = f"Unknown task {name!r}."
    if suggestion:
        msg += " Did you mean " + " or ".join(repr(s) for s in suggestion) + "?"
    msg += " Known tasks: " + ", ".join(known) + "."
    if root is None:
        msg += " (Custom tasks are looked up only when a store root is given.)"
    return msg


def list_tasks(root: str | Path | None = None, paper_only: bool = False) -> list[TaskSpec]:
    """Built-in tasks (paper tasks first), then custom tasks registered under ``root``."""
    tasks = [s for s in BUILTIN_TASKS if s.paper or not paper_only]
    if root is not None and not paper_only:
        tasks += list_custom_tasks(root)
    return tasks


# ---------------------------------------------------------------------------------------- custom tasks
def _check_new_name(name: str) -> None:
    if is_builtin(name):
        raise TaskFileError(f"task name {name!r} clashes with a built-in task; choose another name")


@functools.wraps(read_custom_task, assigned=("__annotations__",))
def make_custom_task(name: str, path: str | Path, *args: Any, **kwargs: Any) -> TaskSpec:
    """A `TaskSpec` for a user's CSV/TSV/JSONL file or folder of split files (not yet registered); a name
    that clashes with a built-in task is refused. The arguments are those of
    `tpv_core.tasks.custom.read_custom_task` (text fields, label field, label words and descriptions, ...)."""
    _check_new_name(str(name).strip().lower())
    return read_custom_task(name, path, *args, **kwargs)


def _tasks_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / CUSTOM_DIR


def stored_prompts_of(name: str, root: str | Path) -> list[str]:
    """Paths of the stored prompts under ``root`` tuned on the task ``name`` (any backbone)."""
    from tpv_core.store import PromptStore

    return [str(p) for p in PromptStore(root).index(task=name)["path"]]


def register_custom_task(spec: TaskSpec, root: str | Path, replace: bool = False) -> TaskSpec:
    """Persist ``spec`` and a normalised copy of its data under ``<root>/_tasks/<name>/``.

    Registering the same definition and data again changes nothing. A *different* definition (labels,
    fields, words, descriptions, targets) or different data under a registered name is refused unless
    ``replace=True``, because prompts tuned on the old task would be scored on the new one; the error
    (and :func:`stored_prompts_of`) names those prompts. Returns the stored spec (reading from the copy).
    """
    _check_new_name(spec.name)
    if not valid_task_name(spec.name):
        raise TaskFileError(f"task name {spec.name!r} is not a valid custom task name")
    folder = _tasks_dir(root) / spec.name
    keep = list(spec.text_fields) + ["label"]
    texts = {}
    for split in SPLITS:
        rows = load_split(spec, split)
        texts[split] = "".join(json.dumps({k: r.get(k) for k in keep}, ensure_ascii=False) + "\n" for r in rows)
    stored = dataclasses.replace(spec, custom=True, paper=False, bundled=None, data_dir=None, label_field="label")
    payload: dict[str, Any] = {"schema": SPEC_SCHEMA, "spec": stored.to_dict()}
    spec_text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if (folder / "spec.json").exists() and not replace:
        changed = _what_changed(folder, spec_text, texts)
        if changed:
            orphans = stored_prompts_of(spec.name, root)
            detail = (f"; {len(orphans)} stored prompt(s) were tuned on it and would be scored on the new one: "
                      + ", ".join(orphans[:5]) + (" ..." if len(orphans) > 5 else "")) if orphans else ""
            raise TaskFileError(f"task {spec.name!r} is already registered in {root} with different {changed}"
                                f"{detail}; pass --replace (replace=True) to redefine it, or choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        atomic_write_text(folder / f"{split}.jsonl", texts[split])
    atomic_write_text(folder / "spec.json", spec_text)
    return dataclasses.replace(stored, data_dir=str(folder))


def _what_changed(folder: Path, spec_text: str, texts: dict[str, str]) -> str:
    """'' when the registered copy in ``folder`` equals the new one; else what differs, in words."""
    try:
        old = json.loads((folder / "spec.json").read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        return "a definition (the registered spec.json is unreadable)"
    new = json.loads(spec_text)["spec"]
    diffs = []
    if old.get("label_names") != new.get("label_names"):
        diffs.append(f"labels (registered {old.get('label_names')}, new {new.get('label_names')})")
    other = sorted(k for k in set(old) | set(new) if k != "label_names" and old.get(k) != new.get(k))
    if other:
        diffs.append("settings (" + ", ".join(other[:5]) + ")")
    for split, text in texts.items():
        try:
            same = (folder / f"{split}.jsonl").read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if not same:
            diffs.append("data")
            break
    return " and ".join(diffs)


def _load_spec(folder: Path) -> TaskSpec:
    p = folder / "spec.json"
    try:
        payload = json.loads(p.read_text(encoding="utf-8"))
        spec = TaskSpec.from_dict(payload["spec"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TaskFileError(f"custom task spec {p} is unreadable or corrupt ({e}); re-register the task") from None
    return dataclasses.replace(spec, data_dir=str(folder), custom=True)


def find_custom_task(name: str, root: str | Path) -> TaskSpec | None:
    """The custom task called ``name`` under ``root`` (same name matching as built-ins), or None."""
    base = _tasks_dir(root)
    if not base.is_dir():
        return None
    want = task_key(name)
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and task_key(folder.name) == want and (folder / "spec.json").is_file():
            return _load_spec(folder)
    return None


def list_custom_tasks(root: str | Path) -> list[TaskSpec]:
    """All custom tasks registered under ``root`` (corrupt entries are skipped with a warning)."""
    base = _tasks_dir(root)
    if not base.is_dir():
        return []
    out = []
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and (folder / "spec.json").is_file():
            try:
                out.append(_load_spec(folder))
            except TaskFileError as e:
                warnings.warn(str(e), stacklevel=2)
    return out


def remove_custom_task(name: str, root: str | Path) -> bool:
    """Delete a registered custom task; returns whether one was removed."""
    spec = find_custom_task(name, root)
    if spec is None or not spec.data_dir:
        return False
    shutil.rmtree(spec.data_dir)
    return True
