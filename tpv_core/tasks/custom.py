"""User tasks: a CSV/TSV/JSONL file or a folder of split files, turned into a `TaskSpec`.

* One file: split 80/10/10 into train/validation/test with ``random.Random(42)`` (file order kept
  within each split).
* A folder: ``train``, ``validation`` (or ``dev``/``valid``) and ``test`` files (``.csv``, ``.tsv``
  or ``.jsonl``). A missing validation or test file is carved from train (10% each, seeded).

Labels: when every label is an integer (``1`` or ``"1"``) the classes are the sorted distinct
integers (0..K-1 stays as is); otherwise the sorted distinct strings. Verbalisers default to the
label names lower-cased (spaces -> ``_``), encoder descriptions to ``"This text is about <label>."``.
Rows without a label are dropped (counted in the spec's caveats).

This module reads and checks the user's files; persisting a task in a store
(`tpv_core.tasks.registry.register_custom_task`) and refusing built-in names
(`tpv_core.tasks.registry.make_custom_task`) live in the registry, above it.
"""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from tpv_core.tasks.spec import SPLITS, TASK_FAMILIES, TaskSpec, Templates, parse_jsonl

CUSTOM_SPLIT_SEED = 42
_EXTS = (".csv", ".tsv", ".jsonl")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "dev", "valid", "val"), "test": ("test",)}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_INT_RE = re.compile(r"^[+-]?\d+$")


class TaskFileError(ValueError):
    """A custom task's file or definition is unusable; the message says what to fix."""


def valid_task_name(name: str) -> bool:
    """1-64 characters: a lower-case letter first, then letters, digits, '_' or '-'."""
    return bool(_NAME_RE.match(name))


# ---------------------------------------------------------------------------------------- reading
def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaskFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskFileError(
            f"{path} is not UTF-8 text (invalid byte at position {e.start}); re-save it as UTF-8"
        ) from None


def _read_table(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a .csv/.tsv/.jsonl file."""
    ext = path.suffix.lower()
    if ext not in _EXTS:
        raise TaskFileError(f"{path}: unsupported file type {ext!r}; use one of {', '.join(_EXTS)}")
    text = _read_text(path)
    if not text.strip():
        raise TaskFileError(f"{path} is empty")
    if ext == ".jsonl":
        rows = parse_jsonl(text.splitlines(), path, TaskFileError)
        cols: dict[str, None] = {}
        for row in rows:
            cols.update(dict.fromkeys(row))
        return rows, list(cols)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if ext == ".tsv" else ",")
    try:
        rows = [dict(r) for r in reader]
    except csv.Error as e:
        raise TaskFileError(f"{path}: malformed {ext[1:].upper()} ({e})") from None
    cols = [c for c in (reader.fieldnames or []) if c is not None]
    return rows, cols


def _find_split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, stems in _SPLIT_ALIASES.items():
        for stem in stems:
            for ext in _EXTS:
                p = folder / f"{stem}{ext}"
                if p.is_file():
                    found.setdefault(split, p)
    return found


def _label_key(v: Any) -> str | int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    s = str(v).strip()
    if not s:
        return None
    return int(s) if _INT_RE.match(s) else s


def _check_columns(path: Path, cols: list[str], need: Sequence[str], rows: list[dict[str, Any]]) -> None:
    if not rows:
        raise TaskFileError(f"{path} has no data rows (columns found: {', '.join(cols) or 'none'})")
    missing = [c for c in need if c not in cols]
    if missing:
        raise TaskFileError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; columns found: "
            f"{', '.join(map(repr, cols)) or 'none'}"
        )


def _read_parts(path: Path, text_fields: Sequence[str], label_field: str) -> dict[str, list[dict[str, Any]]]:
    """Raw rows per split file ("all" for a single file)."""
    if not path.exists():
        raise TaskFileError(f"custom task data not found: {path}")
    need = list(text_fields) + [label_field]
    if path.is_dir():
        files = _find_split_files(path)
        if "train" not in files:
            raise TaskFileError(
                f"{path}: no train file; expected train/validation/test files with one of "
                f"{', '.join(_EXTS)} (found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})"
            )
        parts = {}
        for split, p in files.items():
            rows, cols = _read_table(p)
            _check_columns(p, cols, need, rows)
            parts[split] = rows
        return parts
    rows, cols = _read_table(path)
    _check_columns(path, cols, need, rows)
    return {"all": rows}


def _split_indices(n: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    sizes = [max(1, round(n * f)) for f in fractions]
    out, start = [], 0
    for s in sizes:
        out.append(sorted(idx[start:start + s]))
        start += s
    out.append(sorted(idx[start:]))
    return out


def _carve(parts: dict[str, list[dict[str, Any]]], where: str) -> dict[str, list[dict[str, Any]]]:
    """Fill missing splits: a single file -> 80/10/10; a folder -> 10% of train per missing split."""
    if "all" in parts:
        rows = parts["all"]
        if len(rows) < 3:
            raise TaskFileError(f"{where}: only {len(rows)} labelled rows; need at least 3 to split 80/10/10")
        val, test, train = _split_indices(len(rows), (0.1, 0.1), CUSTOM_SPLIT_SEED)
        return {"train": [rows[i] for i in train], "validation": [rows[i] for i in val],
                "test": [rows[i] for i in test]}
    missing = [s for s in ("validation", "test") if s not in parts]
    if not missing:
        return parts
    train = parts["train"]
    if len(train) < len(missing) + 1:
        raise TaskFileError(f"{where}: train has {len(train)} rows, too few to carve {', '.join(missing)} from it")
    *carved, rest = _split_indices(len(train), [0.1] * len(missing), CUSTOM_SPLIT_SEED)
    out = dict(parts)
    for split, ids in zip(missing, carved):
        out[split] = [train[i] for i in ids]
    out["train"] = [train[i] for i in rest]
    return out


def _labelled(rows: list[dict[str, Any]], label_field: str) -> tuple[list[dict[str, Any]], int]:
    kept = [r for r in rows if _label_key(r.get(label_field)) is not None]
    return kept, len(rows) - len(kept)


# ---------------------------------------------------------------------------------------- labels
def _refuse_ambiguous_labels(keys: list[str | int], path: Path, label_field: str) -> None:
    """Two spellings of one number (``1`` and ``1.0``, ``2`` and ``+2.00``) would become two classes: refuse."""
    by_value: dict[float, set[str]] = {}
    for k in set(keys):
        try:
            value = float(k)
        except (TypeError, ValueError):
            continue
        by_value.setdefault(value, set()).add(str(k))
    clashes = [sorted(v) for v in by_value.values() if len(v) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(x) for x in c) for c in clashes[:3])
        raise TaskFileError(f"{path}: column {label_field!r} spells one label value in several ways ({shown}); they "
                            "would become separate classes: write each label the same way everywhere")


def _label_names(keys: list[str | int]) -> tuple[str, ...]:
    uniq = set(keys)
    if all(isinstance(k, int) for k in uniq):
        return tuple(str(k) for k in sorted(uniq))
    return tuple(sorted(str(k) for k in uniq))


def _per_label(value: Any, names: tuple[str, ...], what: str, default) -> tuple[str, ...]:
    if value is None:
        return tuple(default(n) for n in names)
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value and _label_key(n) not in value]
        if missing:
            raise TaskFileError(f"{what}: no entry for label(s) {missing}; labels are {list(names)}")
        return tuple(str(value[n] if n in value else value[_label_key(n)]) for n in names)
    value = [str(v) for v in value]
    if len(value) != len(names):
        raise TaskFileError(f"{what}: {len(value)} given for {len(names)} labels {list(names)}")
    return tuple(value)


def _default_word(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


# ---------------------------------------------------------------------------------------- API
def read_custom_task(
    name: str,
    path: str | Path,
    text_fields: str | Sequence[str],
    label_field: str,
    label_descriptions: Sequence[str] | Mapping[str, str] | None = None,
    label_words: Sequence[str] | Mapping[str, str] | None = None,
    family: str = "classification",
    title: str | None = None,
    instruction: str | None = None,
    similarity_targets: Sequence[float] | Mapping[str, float] | None = None,
) -> TaskSpec:
    """A `TaskSpec` for a user's CSV/TSV/JSONL file or folder of split files (not yet registered).

    ``similarity_targets`` (two text fields only): one target cosine per label, e.g. 1.0 for "same" and
    0.0 for "different"; the encoder family then reads the class from the cosine of the two fields
    encoded apart (`TaskSpec.similarity_targets`). Use `tpv_core.tasks.make_custom_task`, which also refuses
    the name of a built-in task."""
    name = str(name).strip().lower()
    if not _NAME_RE.match(name):
        raise TaskFileError(
            f"task name {name!r}: use 1-64 characters, a letter first, then letters, digits, '_' or '-'"
        )
    if family not in TASK_FAMILIES:
        raise TaskFileError(f"family {family!r} not in {TASK_FAMILIES}")
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    if not fields:
        raise TaskFileError("give at least one text field")
    path = Path(path).expanduser().resolve()
    parts = _read_parts(path, fields, label_field)
    dropped = 0
    for k in list(parts):
        parts[k], d = _labelled(parts[k], label_field)
        dropped += d
        if not parts[k]:
            raise TaskFileError(f"{path}: no row of {k!r} has a value in column {label_field!r}")
    keys = [_label_key(r[label_field]) for rows in parts.values() for r in rows]
    _refuse_ambiguous_labels(keys, path, label_field)
    names = _label_names(keys)
    if len(names) < 2:
        raise TaskFileError(
            f"{path}: column {label_field!r} has only one class ({names[0]!r}); a task needs at least two"
        )
    words = _per_label(label_words, names, "label_words", _default_word)
    if len({w.strip().lower() for w in words}) != len(words):
        raise TaskFileError(f"label words must be distinct (case-insensitively): {list(words)}")
    descriptions = _per_label(label_descriptions, names, "label_descriptions",
                              lambda n: f"This text is about {n}.")
    targets: tuple[float, ...] = ()
    if similarity_targets is not None:
        given = _per_label(similarity_targets, names, "similarity_targets", None)
        try:
            targets = tuple(float(t) for t in given)
        except ValueError:
            raise TaskFileError(f"similarity_targets must be numbers, got {list(given)}") from None
    caveats = [f"custom task from {path}"]
    caveats.append("split 80/10/10 with random.Random(42)" if path.is_file()
                   else "splits from the folder's files (missing ones carved from train)")
    if dropped:
        caveats.append(f"{dropped} rows without a label were dropped")
    try:  # TaskSpec validates the rest (similarity targets: two text fields, cosines in [-1, 1])
        return TaskSpec(
            name=name, title=title or name, family=family, text_fields=fields, label_field=label_field,
            label_names=names, words=words, descriptions=descriptions,
            metrics=("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1"),
            templates=Templates(instruction=instruction or "What is the label of the text? Answer {choices}."),
            paper=False, caveats=tuple(caveats), source_path=str(path), custom=True, similarity_targets=targets,
        )
    except TaskFileError:
        raise
    except ValueError as e:
        raise TaskFileError(str(e)) from None


def split_custom_source(spec: TaskSpec) -> dict[str, list[dict[str, Any]]]:
    """Normalised rows per split of an unregistered custom task (read from ``source_path``)."""
    if not spec.source_path:
        raise TaskFileError(f"task {spec.name!r} has no source file")
    path = Path(spec.source_path)
    parts = _read_parts(path, spec.text_fields, spec.label_field)
    parts = {k: _labelled(v, spec.label_field)[0] for k, v in parts.items()}
    parts = _carve(parts, str(path))
    index = {_label_key(n): i for i, n in enumerate(spec.label_names)}
    out: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        rows = []
        for r in parts[split]:
            key = _label_key(r[spec.label_field])
            if key not in index:
                raise TaskFileError(f"{path}: label {key!r} not among the task's labels {list(spec.label_names)}")
            row = {f: "" if r.get(f) is None else str(r.get(f)) for f in spec.text_fields}
            row["label"] = index[key]
            if spec.label_field != "label":
                row[spec.label_field] = index[key]
            rows.append(row)
        out[split] = rows
    return out
