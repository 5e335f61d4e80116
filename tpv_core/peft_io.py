"""PEFT interoperability: our prompts as PEFT prompt-tuning adapters, and back.

:func:`export_peft` writes an adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``
with key ``prompt_embeddings``, ``num_transformer_submodules=1``) that ``peft.PeftModel.from_pretrained``
loads; :func:`import_peft` reads one back as a :class:`~tpv_core.prompts.SoftPrompt` (with an origin).
The zip helpers wrap the same folders for upload and download (the app's Library and Combine pages).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tpv_core.atomic import atomic_write_bytes, atomic_write_text
from tpv_core.prompts import Origin, SoftPrompt, require_finite
from tpv_core.store import META_KEY, StoreError, prompt_metadata, read_header

# --------------------------------------------------------------------------------------------------
# adapter folders
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
    require_finite(tensor, "the prompt to export")
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
        try:
            ometa = json.loads((read_header(opath).get("__metadata__") or {}).get(META_KEY, "{}"))
            origin = Origin.from_spec(ometa, st_load(opath.read_bytes())["origin"].float())
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - json, safetensors and the spec check raise their own types
            raise StoreError(f"{opath}: unreadable origin file ({exc}); pass the origin explicitly", opath) from None
    if origin.backbone != backbone:
        raise StoreError(f"origin {origin.id} is on backbone {origin.backbone!r}, not {backbone!r}")
    origin_t = origin.require_tensor()
    if tuple(origin_t.shape) != tuple(emb.shape):
        raise StoreError(f"adapter prompt is {tuple(emb.shape)} but origin {origin.id} is {tuple(origin_t.shape)}")
    meta = {"source": "peft-import", "imported_from": str(d), "backbone_model_id": config.get("base_model_name_or_path")}
    return SoftPrompt(emb.contiguous(), origin, task, backbone, meta)


# --------------------------------------------------------------------------------------------------
# PEFT adapters as zip files (upload / download)
# --------------------------------------------------------------------------------------------------
MAX_ZIP_BYTES = 512 * 1024 * 1024


def dir_to_zip(folder: str | Path, arc_root: str | None = None) -> bytes:
    """Zip every file under ``folder`` (inside a top folder ``arc_root`` when given)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                zf.write(p, f"{arc_root}/{rel}" if arc_root else rel)
    return buf.getvalue()


def adapter_name(text: str) -> str:
    """A file-name safe stem, e.g. ``minilm-l6_sst2_vocab5000-s0-L20``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "adapter"


def peft_zip(tensor: torch.Tensor, *, base_model: str, family: str, origin: Origin | None = None,
             metadata: Mapping[str, Any] | None = None, name: str = "adapter") -> bytes:
    """A PEFT prompt-tuning adapter (see :func:`tpv_core.store.export_peft`) as zip bytes."""
    with tempfile.TemporaryDirectory(prefix="tpv-export-") as tmp:
        out = export_peft(tensor, Path(tmp) / "adapter", base_model=base_model, family=family, origin=origin,
                          metadata=dict(metadata or {}))
        return dir_to_zip(out, adapter_name(name))


def soft_prompt_zip(prompt: SoftPrompt, *, family: str | None = None, base_model: str | None = None) -> bytes:
    """A stored prompt P as a PEFT adapter zip (with our origin file, so it imports back losslessly)."""
    fam = family or prompt.metadata.get("backbone_family") or "decoder"
    with tempfile.TemporaryDirectory(prefix="tpv-export-") as tmp:
        out = export_soft_prompt(prompt, Path(tmp) / "adapter", base_model=base_model, family=fam)
        return dir_to_zip(out, adapter_name(f"{prompt.backbone}_{prompt.task}_{prompt.origin.id}"))


def vector_zip(prompt: SoftPrompt, *, family: str | None = None, base_model: str | None = None) -> bytes:
    """The task prompt vector tau = P - P0 in a PEFT adapter container (``prompt_embeddings`` = tau).

    PEFT would prepend tau as if it were a prompt; the metadata file marks it as a vector and names
    its origin so the library (or a reader) can add it to any P0 of the same backbone.
    """
    tau = prompt.vector()
    fam = family or prompt.metadata.get("backbone_family") or "decoder"
    meta = {"kind": "task_prompt_vector", "task": prompt.task, "backbone": prompt.backbone,
            "origin": prompt.origin.spec(), "note": "prompt_embeddings holds tau = P - P0, not a prompt"}
    return peft_zip(tau.tensor, base_model=base_model or prompt.metadata.get("backbone_model_id") or prompt.backbone,
                    family=fam, metadata=meta, name=f"{prompt.backbone}_{prompt.task}_{prompt.origin.id}_vector")


class AdapterZipError(ValueError):
    """An uploaded zip that is not a usable PEFT prompt adapter."""


def extract_adapter_zip(data: bytes, dest: str | Path) -> Path:
    """Unpack an uploaded adapter zip safely (no absolute paths, no ``..``, size-capped) and return the
    folder that holds ``adapter_config.json``."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise AdapterZipError("the upload is not a zip file; zip the adapter folder (adapter_config.json + "
                              "adapter_model.safetensors)") from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
                raise AdapterZipError(f"unsafe path in zip: {name!r}")
            total += info.file_size
            if total > MAX_ZIP_BYTES:
                raise AdapterZipError("the zip unpacks to more than 512 MB; a prompt adapter is tiny")
        zf.extractall(dest)
    configs = sorted(dest.rglob("adapter_config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise AdapterZipError("no adapter_config.json in the zip; is this a PEFT adapter?")
    return configs[0].parent


def import_adapter_zip(data: bytes, *, task: str, backbone: str, origin: Origin | None = None) -> SoftPrompt:
    """Read an uploaded PEFT prompt adapter zip into a :class:`SoftPrompt` (origin from the zip's
    ``tpv_origin.safetensors`` unless given)."""
    with tempfile.TemporaryDirectory(prefix="tpv-import-") as tmp:
        folder = extract_adapter_zip(data, tmp)
        prompt = import_peft(folder, task=task, backbone=backbone, origin=origin)
    prompt.metadata["imported_from"] = "upload"
    return prompt


def adapter_zip_info(data: bytes) -> dict[str, Any]:
    """What an uploaded adapter says about itself: config, whether it carries our origin file, its
    metadata (task, backbone) when exported by this library."""
    with tempfile.TemporaryDirectory(prefix="tpv-peek-") as tmp:
        folder = extract_adapter_zip(data, tmp)
        info: dict[str, Any] = {"config": json.loads((folder / "adapter_config.json").read_text())}
        info["has_origin"] = (folder / ORIGIN_FILE).is_file()
        meta = folder / METADATA_FILE
        info["metadata"] = json.loads(meta.read_text()) if meta.is_file() else {}
    return info
