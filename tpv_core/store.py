"""The prompt library on disk (the "zoo").

Layout: ``<root>/<backbone>/<task>/<origin-id>.safetensors``, one file per tuned prompt, holding the
tensors ``prompt`` and ``origin`` and, in the safetensors header, one JSON metadata string (key ``tpv``)
with the schema version, backbone id and revision, L, d, origin spec, task, training config, metrics,
steps, wall time and library version. Files are written atomically (temp file, fsync, rename) and read
with safetensors only (never unpickled). ``index()`` reads headers only.

PEFT interop: :func:`export_peft` writes a prompt-tuning adapter directory that
``peft.PeftModel.from_pretrained`` loads; :func:`import_peft` reads one back (with an origin).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tpv_core import __version__
from tpv_core.prompts import Origin, SoftPrompt

SCHEMA_VERSION = 1
META_KEY = "tpv"
SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024


class StoreError(ValueError):
    """A prompt file that cannot be read or written (the message names the file and the fix)."""


# --------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; stored prompts and reports are for sharing
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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


# --------------------------------------------------------------------------------------------------
# PEFT prompt-tuning adapters
# --------------------------------------------------------------------------------------------------
PEFT_TASK_TYPES = {"decoder": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "encoder": "FEATURE_EXTRACTION"}
ORIGIN_FILE = "tpv_origin.safetensors"
METADATA_FILE = "tpv_metadata.json"


def export_peft(
    tensor: torch.Tensor,
    out_dir: str | Path,
    *,
    base_model: str,
    family: str = "decoder",
    origin: Origin | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a PEFT prompt-tuning adapter (``adapter_config.json`` + ``adapter_model.safetensors`` with
    key ``prompt_embeddings``, ``num_transformer_submodules=1``).

    ``base_model`` is the hub id (or folder) of the frozen model; ``family`` picks PEFT's task type. When
    ``origin`` is given it is saved beside the adapter (``tpv_origin.safetensors``) so :func:`import_peft`
    can rebuild the task prompt vector without being told the origin.
    """
    if tensor.dim() != 2:
        raise ValueError(f"a prompt must be 2-D (L x d), got shape {tuple(tensor.shape)}")
    if family not in PEFT_TASK_TYPES:
        raise ValueError(f"unknown backbone family {family!r}; one of {', '.join(PEFT_TASK_TYPES)}")
    length, dim = tensor.shape
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": PEFT_TASK_TYPES[family],
        "base_model_name_or_path": base_model,
        "num_virtual_tokens": int(length),
        "token_dim": int(dim),
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "inference_mode": True,
        "revision": None,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = st_save({"prompt_embeddings": tensor.detach().float().cpu().contiguous()}, metadata={"format": "pt"})
    atomic_write_bytes(out / "adapter_model.safetensors", weights)
    if origin is not None:
        otensor = origin.require_tensor()
        if tuple(otensor.shape) != (length, dim):
            raise ValueError(f"origin {origin.id} is {tuple(otensor.shape)}, prompt is {(length, dim)}")
        data = st_save(
            {"origin": otensor.detach().float().cpu().contiguous()},
            metadata={META_KEY: json.dumps(origin.spec()), "format": "pt"},
        )
        atomic_write_bytes(out / ORIGIN_FILE, data)
    if metadata:
        atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True, default=str))
    atomic_write_text(out / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True))
    return out


def export_soft_prompt(prompt: SoftPrompt, out_dir: str | Path, *, base_model: str | None = None,
                       family: str = "decoder") -> Path:
    meta = {k: v for k, v in prompt_metadata(prompt).items() if k in ("task", "backbone", "metrics", "steps")}
    return export_peft(
        prompt.tensor,
        out_dir,
        base_model=base_model or prompt.metadata.get("backbone_model_id") or prompt.backbone,
        family=family,
        origin=prompt.origin,
        metadata=meta,
    )


def import_peft(
    adapter_dir: str | Path,
    *,
    task: str,
    backbone: str,
    origin: Origin | None = None,
) -> SoftPrompt:
    """Read a PEFT prompt-tuning adapter as a :class:`SoftPrompt`.

    PEFT stores no origin: give one (``origin``, with its tensor) unless the directory was exported by
    this library with an origin file.
    """
    d = Path(adapter_dir)
    cfg_path, w_path = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise StoreError(f"{d}: not a PEFT adapter (needs adapter_config.json and adapter_model.safetensors)")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"{cfg_path}: not valid JSON") from None
    if config.get("peft_type") != "PROMPT_TUNING":
        raise StoreError(f"{d}: peft_type is {config.get('peft_type')!r}; only PROMPT_TUNING adapters hold a soft prompt")
    read_header(w_path)
    try:
        tensors = st_load(w_path.read_bytes())
    except Exception as exc:
        raise StoreError(f"{w_path}: cannot decode ({exc})") from None
    if "prompt_embeddings" not in tensors:
        raise StoreError(f"{w_path}: no 'prompt_embeddings' tensor (found {sorted(tensors)})")
    emb = tensors["prompt_embeddings"].float()
    n_sub = int(config.get("num_transformer_submodules") or 1)
    length = int(config.get("num_virtual_tokens") or emb.shape[0] // n_sub)
    if emb.shape[0] != length * n_sub:
        raise StoreError(f"{d}: prompt_embeddings has {emb.shape[0]} rows, config says {length} x {n_sub}")
    emb = emb[:length]  # with two submodules (T5 default) the first half feeds the encoder
    if origin is None:
        opath = d / ORIGIN_FILE
        if not opath.is_file():
            raise StoreError(
                f"{d}: PEFT adapters carry no origin; pass the origin the prompt was tuned from "
                "(e.g. make_origin(backbone, seed=...))"
            )
        ometa = json.loads((read_header(opath).get("__metadata__") or {}).get(META_KEY, "{}"))
        origin = Origin.from_spec(ometa, st_load(opath.read_bytes())["origin"].float())
    if origin.backbone != backbone:
        raise StoreError(f"origin {origin.id} is on backbone {origin.backbone!r}, not {backbone!r}")
    origin_t = origin.require_tensor()
    if tuple(origin_t.shape) != tuple(emb.shape):
        raise StoreError(f"adapter prompt is {tuple(emb.shape)} but origin {origin.id} is {tuple(origin_t.shape)}")
    meta = {"source": "peft-import", "imported_from": str(d), "backbone_model_id": config.get("base_model_name_or_path")}
    return SoftPrompt(emb.contiguous(), origin, task, backbone, meta)
