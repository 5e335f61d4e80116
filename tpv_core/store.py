"""The prompt library on disk (the "zoo").

Layout: ``<root>/<backbone>/<task>/<origin-id>.safetensors``, one file per tuned prompt, holding the
tensors ``prompt`` and ``origin`` and, in the safetensors header, one JSON metadata string (key ``tpv``)
with the schema version, backbone id and revision, L, d, origin spec, task, training config, metrics,
steps, wall time, library version and two checksums (tensor bytes, metadata). Files are written
atomically (temp file, fsync, rename) under a per-file lock, never over an existing prompt unless the
caller asks (``overwrite=True``), and read with safetensors only (never unpickled), after one schema
check (:mod:`tpv_core.store_schema`). ``index()`` reads headers only and skips bad files with a note.

PEFT interop (adapter folders and zips) lives in :mod:`tpv_core.peft_io`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd

from tpv_core import __version__
from tpv_core.atomic import atomic_write_bytes
from tpv_core.filelock import file_lock
from tpv_core.store_schema import (  # noqa: F401 - the error classes are part of this module's API
    CHECKSUM_FIELDS,
    META_KEY,
    SCHEMA_VERSION,
    ChecksumError,
    CorruptFileError,
    NonFiniteError,
    PromptExistsError,
    SchemaError,
    StoreError,
    StoreLockedError,
    meta_checksum,
    origin_id_of,
    safe_name,
    tensor_checksum,
    validate_header,
    verify_checksums,
)

if TYPE_CHECKING:  # pragma: no cover - torch loads on the first tensor read or write, not to list a store
    import torch
    from tpv_core.prompts import Origin, SoftPrompt


def st_load(data: bytes) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load
    return load(data)


def st_save(tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save
    return save(tensors, metadata=metadata)


SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024
LOCK_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------------
# reading (every read goes through one schema check: tpv_core.store_schema.validate_header)
# --------------------------------------------------------------------------------------------------
def _open_regular(path: Path) -> tuple[int, int]:
    """(fd, size) of ``path`` opened for reading, refusing FIFOs, devices and folders without opening them
    (a FIFO would block the reader forever)."""
    try:
        st = os.stat(path)  # follows symlinks; a symlink loop raises ELOOP
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})", path) from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path}: not a regular file (a FIFO, device or folder); remove it from the store", path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})", path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped between the two calls
        os.close(fd)
        raise CorruptFileError(f"{path}: not a regular file; remove it from the store", path)
    return fd, st.st_size


def _read_file(path: Path, whole: bool) -> tuple[dict[str, Any], bytes | None, int]:
    """(header, the whole file or None, length of the tensor bytes) of a safetensors file."""
    fd, size = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CorruptFileError(f"{path}: file is truncated (no safetensors header); re-save or delete it", path)
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise CorruptFileError(f"{path}: corrupt or truncated safetensors header; re-save or delete it", path)
            raw = fh.read(n)
            data = fh.read() if whole else None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})", path) from None
    if len(raw) != n or (data is not None and len(data) != size - 8 - n):
        raise CorruptFileError(f"{path}: the file changed size while being read; retry", path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CorruptFileError(f"{path}: corrupt safetensors header (not JSON); re-save or delete it", path) from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path}: corrupt safetensors header (not an object); re-save or delete it", path)
    return header, (head + raw + data if whole else None), size - 8 - n


def read_header(path: str | Path) -> dict[str, Any]:
    """The safetensors header of ``path`` as a dict, validated enough to trust offsets."""
    path = Path(path)
    header, _, data_len = _read_file(path, whole=False)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or offsets[1] > data_len):
            raise CorruptFileError(f"{path}: tensor {name!r} points past the end of the file (truncated); re-save it",
                                   path, f"{name}.data_offsets")
    return header


def read_metadata(path: str | Path, layout: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """The ``tpv`` metadata of a stored prompt, from its header alone, checked against the schema
    (:func:`tpv_core.store_schema.validate_header`). Does not verify checksums (see :func:`load_prompt`)."""
    path = Path(path)
    header, _, data_len = _read_file(path, whole=False)
    return validate_header(path, header, data_len, layout)


# --------------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------------
def prompt_metadata(prompt: SoftPrompt) -> dict[str, Any]:
    meta = dict(prompt.metadata)
    for key in CHECKSUM_FIELDS:  # recomputed on every save
        meta.pop(key, None)
    meta.update(
        schema=SCHEMA_VERSION,
        backbone=prompt.backbone,
        task=prompt.task,
        length=prompt.length,
        dim=prompt.dim,
        origin=prompt.origin.spec(),
    )
    meta.setdefault("library_version", __version__)
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for key in ("backbone_model_id", "backbone_revision", "training", "metrics", "steps", "wall_time_s"):
        meta.setdefault(key, None)
    return meta


def _with_checksums(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Serialise with ``checksum`` (tensor bytes) and ``meta_checksum`` in the metadata."""
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))  # exactly what a reader will see
    for key in CHECKSUM_FIELDS:
        meta.pop(key, None)
    blob = st_save(tensors, metadata={"format": "pt"})
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta["checksum"] = tensor_checksum(header, memoryview(blob)[8 + n :])
    meta["meta_checksum"] = meta_checksum(meta)
    return st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True), "format": "pt"})


def serialize(prompt: SoftPrompt) -> bytes:
    from tpv_core.prompts import require_finite

    require_finite(prompt.tensor, f"prompt {prompt.task}/{prompt.origin.id}")
    require_finite(prompt.origin.require_tensor(), f"origin {prompt.origin.id}")
    tensors = {
        "prompt": prompt.tensor.detach().float().cpu().clone().contiguous(),
        "origin": prompt.origin.require_tensor().detach().float().cpu().clone().contiguous(),
    }
    return _with_checksums(tensors, prompt_metadata(prompt))


def load_prompt(path: str | Path, layout: tuple[str, str, str] | None = None) -> SoftPrompt:
    """Load one stored prompt. Everything is checked before a tensor is used: the schema
    (:func:`tpv_core.store_schema.validate_header`, with the folder when ``layout`` is given), the
    checksums when the file carries them, and finite values. Any failure is a :class:`StoreError`
    naming the file and the field."""
    import torch
    from tpv_core.prompts import Origin, SoftPrompt

    path = Path(path)
    header, blob, data_len = _read_file(path, whole=True)
    meta = validate_header(path, header, data_len, layout)
    verify_checksums(path, header, meta, memoryview(blob)[len(blob) - data_len :])
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptFileError(f"{path}: cannot decode tensors ({exc}); the file is corrupt", path) from None
    for name in ("prompt", "origin"):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise NonFiniteError(f"{path}: field {name!r}: the tensor holds NaN or infinity; retrain the prompt "
                                 "or delete the file", path, name)
    try:
        origin = Origin.from_spec(meta["origin"], tensors["origin"].float())
        extra = {k: v for k, v in meta.items() if k not in ("backbone", "task", "length", "dim", "origin")}
        return SoftPrompt(tensors["prompt"].float(), origin, meta["task"], meta["backbone"], extra)
    except ValueError as exc:  # already ruled out by the schema check; kept so no raw error escapes
        raise SchemaError(f"{path}: {exc}; re-save the prompt", path) from None


class PromptStore:
    """A folder of stored prompts: ``<root>/<backbone>/<task>/<origin-id>.safetensors``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PromptStore({str(self.root)!r})"

    def path_for(self, backbone: str, task: str, origin_id: str) -> Path:
        return self.root / safe_name(backbone) / safe_name(task) / f"{safe_name(origin_id)}{SUFFIX}"

    def layout_of(self, path: str | Path) -> tuple[str, str, str] | None:
        """(backbone folder, task folder, stem) of a file directly in this store's layout, else None."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        if len(rel.parts) != 3 or not rel.name.endswith(SUFFIX):
            return None
        return rel.parts[0], rel.parts[1], rel.name[: -len(SUFFIX)]

    def lock_path(self, path: Path) -> Path:
        return path.with_name(f".{path.name}.lock")

    def lock(self, path: Path, timeout: float | None = None) -> contextlib.AbstractContextManager:
        """The lock of one target file (``.<name>.lock`` beside it, see :func:`tpv_core.filelock.file_lock`):
        saves of the same target, from threads or processes, run one after the other."""
        what = f"{path}: another save of this prompt"
        return file_lock(self.lock_path(path), LOCK_TIMEOUT_S if timeout is None else timeout, what)

    def save(self, prompt: SoftPrompt, overwrite: bool = False) -> Path:
        """Write ``prompt`` to its place in the store, atomically, under the target's lock.

        A prompt the store already holds under the same backbone / task / origin is replaced only with
        ``overwrite=True``; otherwise :class:`PromptExistsError` (also when another thread or process
        saved the same name a moment before). NaN or infinite values are refused."""
        path = self.path_for(prompt.backbone, prompt.task, prompt.origin.id)
        data = serialize(prompt)  # checks finiteness before anything is locked or written
        with self.lock(path):
            if os.path.lexists(path) and not overwrite:
                raise PromptExistsError(
                    f"{path} exists: the store already holds a {prompt.task} prompt from origin {prompt.origin.id} on "
                    f"{prompt.backbone}; choose another name, or replace it explicitly (overwrite=True, --force in "
                    "the CLI, the Replace button in the app)", path)
            return atomic_write_bytes(path, data)

    def exists(self, backbone: str, task: str, origin_id: str) -> bool:
        return os.path.lexists(self.path_for(backbone, task, origin_id))

    def load(self, backbone: str, task: str, origin_id: str) -> SoftPrompt:
        path = self.path_for(backbone, task, origin_id)
        if not os.path.lexists(path):
            raise FileNotFoundError(
                f"no stored prompt for backbone={backbone!r} task={task!r} origin={origin_id!r} under {self.root}"
            )
        return load_prompt(path, layout=self.layout_of(path))

    def load_path(self, path: str | Path) -> SoftPrompt:
        """Load a file of this store by path (its folder checked against its metadata)."""
        return load_prompt(path, layout=self.layout_of(path))

    def files(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return iter(())
        return (p for p in sorted(self.root.glob(f"*/*/*{SUFFIX}")) if not p.name.startswith("."))

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """(relative path, mtime_ns, size) of every stored file: changes whenever the store does, so it can
        key caches of the index and of loaded prompts."""
        out = []
        for p in self.files():
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((str(p.relative_to(self.root)), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def index(
        self,
        backbone: str | None = None,
        task: str | None = None,
        origin: str | None = None,
        errors: list[str] | None = None,
    ) -> pd.DataFrame:
        """One row per stored prompt, read from headers only (each checked against the schema and its
        folder). Bad files are skipped; their one-line messages are appended to ``errors`` when given."""
        rows = []
        for path in self.files():
            try:
                meta = read_metadata(path, layout=self.layout_of(path))
            except StoreError as exc:
                if errors is not None:
                    errors.append(str(exc).splitlines()[0] if str(exc) else repr(exc))
                continue
            o = meta["origin"]
            if backbone and meta["backbone"] != backbone:
                continue
            if task and meta["task"] != task:
                continue
            if origin is not None and origin not in (o.get("id"), str(o.get("seed"))):
                continue
            metrics = meta.get("metrics") or {}
            row = {"backbone": meta["backbone"], "task": meta["task"], "origin": o.get("id") or origin_id_of(o),
                   "origin_kind": o.get("kind"), "seed": o.get("seed"), "length": meta["length"], "dim": meta["dim"],
                   **{k: meta.get(k) for k in ("steps", "best_step", "stopped_early", "wall_time_s", "created")},
                   "recipe": (meta.get("recipe") or {}).get("name"), "source": meta.get("source") or "trained",
                   "path": str(path)}
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[f"metric_{name}"] = value
            rows.append(row)
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=["backbone", "task", "origin", "origin_kind", "seed", "length", "dim", "steps",
                                         "best_step", "stopped_early", "wall_time_s", "created", "recipe", "source",
                                         "path"])
        return df.sort_values(["backbone", "task", "seed", "origin"], kind="stable").reset_index(drop=True)

    def load_all(self, backbone: str | None = None, task: str | None = None, origin: str | None = None) -> list[SoftPrompt]:
        return [self.load_path(p) for p in self.index(backbone, task, origin)["path"]]

    def delete(self, backbone: str, task: str, origin_id: str) -> None:
        self.path_for(backbone, task, origin_id).unlink()
