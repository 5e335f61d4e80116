"""The prompt library on disk (the "zoo").

Layout: ``<root>/<backbone>/<task>/<origin-id>.safetensors``, one file per tuned prompt, holding the
tensors ``prompt`` and ``origin`` and, in the safetensors header, one JSON metadata string (key ``tpv``)
with the schema version, backbone id and revision, L, d, origin spec, task, training config, metrics,
steps, wall time and library version. Files are written atomically (`tpv_core.atomic`) and read
with safetensors only (never unpickled). ``index()`` reads headers only.

PEFT interop (adapter folders and zips) lives in :mod:`tpv_core.peft_io`.
"""

from __future__ import annotations

import datetime as _dt
import json
import struct
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tpv_core import __version__
from tpv_core.atomic import atomic_write_bytes
from tpv_core.prompts import Origin, SoftPrompt

SCHEMA_VERSION = 1
META_KEY = "tpv"
SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024


class StoreError(ValueError):
    """A prompt file that cannot be read or written (the message names the file and the fix)."""


# --------------------------------------------------------------------------------------------------
# header parsing (cheap, no tensors)
# --------------------------------------------------------------------------------------------------
def read_header(path: str | Path) -> dict[str, Any]:
    """The safetensors header of ``path`` as a dict, validated enough to trust offsets."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise StoreError(f"{path}: file is truncated (no safetensors header); re-save or delete it")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise StoreError(f"{path}: corrupt or truncated safetensors header; re-save or delete it")
            raw = fh.read(n)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError(f"{path}: corrupt safetensors header (not JSON); re-save or delete it") from None
    if not isinstance(header, dict):
        raise StoreError(f"{path}: corrupt safetensors header")
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not offsets or len(offsets) != 2 or offsets[1] > data_len:
            raise StoreError(f"{path}: tensor {name!r} points past the end of the file (truncated); re-save it")
    return header


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``tpv`` metadata of a stored prompt, checked for schema version."""
    path = Path(path)
    header = read_header(path)
    raw = (header.get("__metadata__") or {}).get(META_KEY)
    if raw is None:
        raise StoreError(f"{path}: no tpv metadata in the header; not a prompt saved by this library")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise StoreError(f"{path}: the tpv metadata is not valid JSON; re-save the prompt") from None
    schema = meta.get("schema")
    if not isinstance(schema, int):
        raise StoreError(f"{path}: metadata has no schema version")
    if schema > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written with schema {schema} by tpv {meta.get('library_version', '?')}, newer than this "
            f"library understands ({SCHEMA_VERSION}); upgrade tpv-workbench"
        )
    for key in ("backbone", "task", "length", "dim", "origin"):
        if key not in meta:
            raise StoreError(f"{path}: metadata lacks {key!r}")
    for name in ("prompt", "origin"):
        if name not in header:
            raise StoreError(f"{path}: missing tensor {name!r}; the file is incomplete")
        shape = tuple(header[name].get("shape", ()))
        if shape != (meta["length"], meta["dim"]):
            raise StoreError(
                f"{path}: tensor {name!r} has shape {shape} but the header says ({meta['length']}, {meta['dim']})"
            )
    return meta


# --------------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    """A path component for a backbone or task name (hub ids contain '/')."""
    out = text.replace("/", "--").replace("\\", "--").strip()
    if not out or out in {".", ".."}:
        raise ValueError(f"not a usable name: {text!r}")
    return out


def prompt_metadata(prompt: SoftPrompt) -> dict[str, Any]:
    meta = dict(prompt.metadata)
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


def serialize(prompt: SoftPrompt) -> bytes:
    meta = prompt_metadata(prompt)
    tensors = {
        "prompt": prompt.tensor.detach().float().cpu().clone().contiguous(),
        "origin": prompt.origin.require_tensor().detach().float().cpu().clone().contiguous(),
    }
    return st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True, default=str), "format": "pt"})


def load_prompt(path: str | Path) -> SoftPrompt:
    """Load one stored prompt, rejecting truncated, corrupt, incomplete or too-new files."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = st_load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise StoreError(f"{path}: cannot decode tensors ({exc}); the file is corrupt") from None
    origin = Origin.from_spec(meta["origin"], tensors["origin"].float())
    if origin.length != meta["length"] or origin.dim != meta["dim"]:
        raise StoreError(f"{path}: origin spec ({origin.length}, {origin.dim}) disagrees with the header")
    extra = {k: v for k, v in meta.items() if k not in ("backbone", "task", "length", "dim", "origin")}
    return SoftPrompt(tensors["prompt"].float(), origin, meta["task"], meta["backbone"], extra)


class PromptStore:
    """A folder of stored prompts: ``<root>/<backbone>/<task>/<origin-id>.safetensors``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PromptStore({str(self.root)!r})"

    def path_for(self, backbone: str, task: str, origin_id: str) -> Path:
        return self.root / safe_name(backbone) / safe_name(task) / f"{safe_name(origin_id)}{SUFFIX}"

    def save(self, prompt: SoftPrompt, overwrite: bool = True) -> Path:
        path = self.path_for(prompt.backbone, prompt.task, prompt.origin.id)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        return atomic_write_bytes(path, serialize(prompt))

    def exists(self, backbone: str, task: str, origin_id: str) -> bool:
        return self.path_for(backbone, task, origin_id).exists()

    def load(self, backbone: str, task: str, origin_id: str) -> SoftPrompt:
        path = self.path_for(backbone, task, origin_id)
        if not path.exists():
            raise FileNotFoundError(
                f"no stored prompt for backbone={backbone!r} task={task!r} origin={origin_id!r} under {self.root}"
            )
        return load_prompt(path)

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
        """One row per stored prompt, read from headers only. Unreadable files are skipped and their
        messages appended to ``errors`` when given."""
        rows = []
        for path in self.files():
            try:
                meta = read_metadata(path)
            except StoreError as exc:
                if errors is not None:
                    errors.append(str(exc))
                continue
            o = meta["origin"]
            if backbone and meta["backbone"] != backbone:
                continue
            if task and meta["task"] != task:
                continue
            if origin is not None and origin not in (o.get("id"), str(o.get("seed"))):
                continue
            metrics = meta.get("metrics") or {}
            row = {
                "backbone": meta["backbone"],
                "task": meta["task"],
                "origin": o.get("id"),
                "origin_kind": o.get("kind"),
                "seed": o.get("seed"),
                "length": meta["length"],
                "dim": meta["dim"],
                "steps": meta.get("steps"),
                "wall_time_s": meta.get("wall_time_s"),
                "created": meta.get("created"),
                "source": meta.get("source", "trained"),
                "path": str(path),
            }
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    row[f"metric_{name}"] = value
            rows.append(row)
        columns = ["backbone", "task", "origin", "origin_kind", "seed", "length", "dim", "steps",
                   "wall_time_s", "created", "source", "path"]
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=columns)
        return df.sort_values(["backbone", "task", "seed", "origin"], kind="stable").reset_index(drop=True)

    def load_all(self, backbone: str | None = None, task: str | None = None, origin: str | None = None) -> list[SoftPrompt]:
        return [load_prompt(p) for p in self.index(backbone, task, origin)["path"]]

    def delete(self, backbone: str, task: str, origin_id: str) -> None:
        self.path_for(backbone, task, origin_id).unlink()
