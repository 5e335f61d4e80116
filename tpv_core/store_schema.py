"""What a stored prompt file must look like, checked in one place.

Every read of a stored prompt (``read_metadata``, ``load_prompt``, ``PromptStore.index``) goes through
:func:`validate_header`: the safetensors header (tensor names, dtypes, shapes, offsets) and the ``tpv``
metadata (types of every known field, required fields, origin spec agreeing with the shapes, and, when
the file sits in a store, backbone / task / origin id agreeing with its folder). A failure is a
:class:`StoreError` subclass whose message names the file and the field.

Integrity: the store writes two checksums into the metadata, ``checksum`` (SHA-256 of the tensor bytes,
``prompt`` then ``origin``, as stored) and ``meta_checksum`` (SHA-256 of the canonical JSON of the other
metadata fields); :func:`verify_checksums` checks them on load. Files written before checksums existed
have none; ``tpv store verify --fix-missing`` adds them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

META_KEY = "tpv"
SCHEMA_VERSION = 1
TENSORS = ("prompt", "origin")
DTYPES = {"F32": 4, "F16": 2, "BF16": 2}  # stored prompts are floating point, nothing else
ORIGIN_KINDS = ("vocab", "normal", "uniform")
CHECKSUM_FIELDS = ("checksum", "meta_checksum")


class StoreError(ValueError):
    """A prompt file that cannot be read or written; the message names the file, the field and the fix."""

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.field = field


class CorruptFileError(StoreError):
    """Not readable as a stored prompt at all: truncated, not safetensors, not a regular file."""


class SchemaError(StoreError):
    """Readable, but a header or metadata field has the wrong type, is missing or disagrees."""


class ChecksumError(StoreError):
    """The tensor bytes or the metadata differ from what was written (a changed or damaged file)."""


class NonFiniteError(StoreError):
    """A prompt tensor holding NaN or infinity (never evaluated, saved or exported)."""


class PromptExistsError(StoreError, FileExistsError):
    """A save under a name the store already holds, without an explicit replace."""


class StoreLockedError(StoreError):
    """Another save of the same target held its lock for too long."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# metadata fields this library writes, with the check each value must pass (None is allowed for optional ones)
_OPTIONAL: dict[str, tuple[str, Any]] = {
    "metrics": ("an object", lambda v: isinstance(v, dict)),
    "training": ("an object", lambda v: isinstance(v, dict)),
    "readout": ("an object", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
    "combination": ("an object", lambda v: isinstance(v, dict)),
    "steps": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "best_step": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "wall_time_s": ("a finite number >= 0", lambda v: _is_number(v) and v >= 0),
    "created": ("a string", lambda v: isinstance(v, str)),
    "library_version": ("a string", lambda v: isinstance(v, str)),
    "backbone_model_id": ("a string", lambda v: isinstance(v, str)),
    "backbone_revision": ("a string", lambda v: isinstance(v, str)),
    "backbone_family": ("a string", lambda v: isinstance(v, str)),
    "source": ("a string", lambda v: isinstance(v, str)),
    "command": ("a string", lambda v: isinstance(v, str)),
    "checksum": ("a 'sha256:<hex>' string", lambda v: isinstance(v, str) and v.startswith("sha256:")),
    "meta_checksum": ("a 'sha256:<hex>' string", lambda v: isinstance(v, str) and v.startswith("sha256:")),
}


def _fail(cls: type[StoreError], path: Path, field: str | None, problem: str, fix: str) -> StoreError:
    where = f"field {field!r}: " if field else ""
    return cls(f"{path}: {where}{problem}; {fix}", path, field)


def origin_id_of(spec: Mapping[str, Any]) -> str:
    kind = f"vocab{spec.get('vocab_limit', 5000)}" if spec["kind"] == "vocab" else spec["kind"]
    return f"{kind}-s{spec['seed']}-L{spec['length']}"


def check_tensor_entries(path: Path, header: Mapping[str, Any], data_len: int) -> None:
    """The tensor part of a safetensors header: exactly ``prompt`` and ``origin``, float dtypes, 2-D shapes,
    offsets inside the file and of the right size."""
    fix = "re-save or delete the file"
    for name in TENSORS:
        if name not in header:
            raise _fail(SchemaError, path, name, f"missing tensor {name!r}", "the file is incomplete; " + fix)
    extra = sorted(k for k in header if k not in (*TENSORS, "__metadata__"))
    if extra:
        raise _fail(SchemaError, path, extra[0], f"unexpected tensor(s) {extra}", "not a prompt saved by this library")
    for name in TENSORS:
        info = header[name]
        if not isinstance(info, dict):
            raise _fail(CorruptFileError, path, name, "tensor entry is not an object", fix)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            raise _fail(SchemaError, path, f"{name}.dtype", f"dtype {dtype!r} is not one of {', '.join(DTYPES)}",
                        "a stored prompt is a float16/bfloat16/float32 tensor; " + fix)
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) and s >= 0 for s in shape)):
            raise _fail(SchemaError, path, f"{name}.shape", f"shape {shape!r} is not two non-negative integers", fix)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise _fail(CorruptFileError, path, f"{name}.data_offsets", f"offsets {offsets!r} are not two ordered "
                        "integers", fix)
        if offsets[1] > data_len:
            raise _fail(CorruptFileError, path, f"{name}.data_offsets",
                        f"tensor {name!r} points past the end of the file (truncated)", fix)
        if offsets[1] - offsets[0] != shape[0] * shape[1] * DTYPES[dtype]:
            raise _fail(CorruptFileError, path, f"{name}.data_offsets",
                        f"{offsets[1] - offsets[0]} bytes do not hold a {shape} {dtype} tensor", fix)


def parse_metadata(path: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tpv`` JSON object from the header's ``__metadata__``."""
    raw_meta = header.get("__metadata__")
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, dict):
        raise _fail(CorruptFileError, path, "__metadata__", "header metadata is not an object", "re-save the prompt")
    raw = raw_meta.get(META_KEY)
    if raw is None:
        raise _fail(SchemaError, path, META_KEY, "no tpv metadata in the header",
                    "not a prompt saved by this library (import adapters with `tpv store import` or the Library page)")
    if not isinstance(raw, str):
        raise _fail(SchemaError, path, META_KEY, "the tpv metadata is not a JSON string", "re-save the prompt")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise _fail(SchemaError, path, META_KEY, "the tpv metadata is not valid JSON", "re-save the prompt") from None
    if not isinstance(meta, dict):
        raise _fail(SchemaError, path, META_KEY, f"the tpv metadata is a {type(meta).__name__}, not an object",
                    "re-save the prompt")
    return meta


def validate_header(path: str | Path, header: Mapping[str, Any], data_len: int,
                    layout: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """Check a parsed safetensors header against the stored-prompt schema and return the ``tpv`` metadata.

    ``data_len``: bytes after the header. ``layout``: (backbone folder, task folder, file stem) when the
    file sits in a store; the metadata must then name the same backbone, task and origin id.
    """
    path = Path(path)
    if not isinstance(header, dict):
        raise _fail(CorruptFileError, path, None, "corrupt safetensors header (not an object)", "re-save or delete it")
    meta = parse_metadata(path, header)
    fix = "re-save the prompt (or delete the file)"
    schema = meta.get("schema")
    if not _is_int(schema) or schema < 1:
        raise _fail(SchemaError, path, "schema", f"metadata has no schema version (got {schema!r})", fix)
    if schema > SCHEMA_VERSION:
        raise _fail(SchemaError, path, "schema", f"written with schema {schema} by tpv "
                    f"{meta.get('library_version', '?')}, newer than this library understands ({SCHEMA_VERSION})",
                    "upgrade tpv-workbench")
    for key in ("backbone", "task"):
        if key not in meta:
            raise _fail(SchemaError, path, key, f"metadata lacks {key!r}", fix)
        if not isinstance(meta[key], str) or not meta[key].strip():
            raise _fail(SchemaError, path, key, f"must be a non-empty string, got {meta[key]!r}", fix)
    for key in ("length", "dim"):
        if key not in meta:
            raise _fail(SchemaError, path, key, f"metadata lacks {key!r}", fix)
        if not _is_int(meta[key]) or meta[key] < 1:
            raise _fail(SchemaError, path, key, f"must be a positive integer, got {meta[key]!r}", fix)
    for key, (what, ok) in _OPTIONAL.items():
        value = meta.get(key)
        if value is not None and not ok(value):
            raise _fail(SchemaError, path, key, f"must be {what} or null, got {value!r:.80}", fix)
    _check_origin(path, meta)
    check_tensor_entries(path, header, data_len)
    for name in TENSORS:
        shape = tuple(header[name]["shape"])
        if shape != (meta["length"], meta["dim"]):
            raise _fail(SchemaError, path, f"{name}.shape", f"tensor {name!r} has shape {shape} but the header "
                        f"says ({meta['length']}, {meta['dim']})", fix)
    if layout is not None:
        _check_layout(path, meta, layout)
    return meta


def _check_origin(path: Path, meta: dict[str, Any]) -> None:
    fix = "re-save the prompt (or delete the file)"
    spec = meta.get("origin")
    if "origin" not in meta:
        raise _fail(SchemaError, path, "origin", "metadata lacks 'origin'", fix)
    if not isinstance(spec, dict):
        raise _fail(SchemaError, path, "origin", f"must be an object (the origin spec), got {spec!r:.80}", fix)
    for key, what, ok in (
        ("backbone", "a string", lambda v: isinstance(v, str)),
        ("kind", f"one of {', '.join(ORIGIN_KINDS)}", lambda v: v in ORIGIN_KINDS),
        ("seed", "an integer", _is_int),
        ("length", "a positive integer", lambda v: _is_int(v) and v >= 1),
        ("dim", "a positive integer", lambda v: _is_int(v) and v >= 1),
    ):
        if key not in spec:
            raise _fail(SchemaError, path, f"origin.{key}", "missing from the origin spec", fix)
        if not ok(spec[key]):
            raise _fail(SchemaError, path, f"origin.{key}", f"must be {what}, got {spec[key]!r:.80}", fix)
    if "vocab_limit" in spec and not (_is_int(spec["vocab_limit"]) and spec["vocab_limit"] >= 1):
        raise _fail(SchemaError, path, "origin.vocab_limit", f"must be a positive integer, got "
                    f"{spec['vocab_limit']!r:.80}", fix)
    if spec["backbone"] != meta["backbone"]:
        raise _fail(SchemaError, path, "origin.backbone", f"origin is on {spec['backbone']!r} but the prompt on "
                    f"{meta['backbone']!r}", fix)
    if (spec["length"], spec["dim"]) != (meta["length"], meta["dim"]):
        raise _fail(SchemaError, path, "origin", f"origin spec ({spec['length']}, {spec['dim']}) disagrees with "
                    f"the header ({meta['length']}, {meta['dim']})", fix)
    if "id" in spec and spec["id"] != origin_id_of(spec):
        raise _fail(SchemaError, path, "origin.id", f"origin id {spec['id']!r:.80} does not match its spec "
                    f"({origin_id_of(spec)})", fix)


def safe_name(text: str) -> str:
    """A path component for a backbone or task name (hub ids contain '/')."""
    out = text.replace("/", "--").replace("\\", "--").strip()
    if not out or out in {".", ".."} or out.startswith(".") or "\0" in out:
        raise ValueError(f"not a usable name: {text!r} (names may not be empty or start with '.')")
    return out


def _check_layout(path: Path, meta: dict[str, Any], layout: tuple[str, str, str]) -> None:
    bb_dir, task_dir, stem = layout
    fix = "move the file to the folder its metadata names, or delete it"
    if safe_name(meta["backbone"]) != bb_dir:
        raise _fail(SchemaError, path, "backbone", f"metadata names backbone {meta['backbone']!r} but the file is "
                    f"in the {bb_dir}/ folder", fix)
    if safe_name(meta["task"]) != task_dir:
        raise _fail(SchemaError, path, "task", f"metadata names task {meta['task']!r} but the file is in the "
                    f"{task_dir}/ folder", fix)
    oid = origin_id_of(meta["origin"])
    if safe_name(oid) != stem:
        raise _fail(SchemaError, path, "origin", f"metadata names origin {oid!r} but the file is called {stem}", fix)


# --------------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------------
def tensor_checksum(header: Mapping[str, Any], data: bytes | memoryview) -> str:
    """SHA-256 of the stored bytes of ``prompt`` then ``origin`` (header already validated)."""
    h = hashlib.sha256()
    for name in TENSORS:
        start, end = header[name]["data_offsets"]
        h.update(data[start:end])
    return "sha256:" + h.hexdigest()


def meta_checksum(meta: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the metadata without its checksum fields."""
    body = {k: v for k, v in meta.items() if k not in CHECKSUM_FIELDS}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def verify_checksums(path: Path, header: Mapping[str, Any], meta: Mapping[str, Any], data: bytes | memoryview,
                     require: bool = False) -> bool:
    """Check the stored checksums against the file; returns False when the file carries none (and
    ``require`` is False)."""
    want_t, want_m = meta.get("checksum"), meta.get("meta_checksum")
    if want_t is None and want_m is None:
        if require:
            raise _fail(ChecksumError, path, "checksum", "the file carries no checksum",
                        "add one with `tpv store verify --fix-missing <root>`")
        return False
    fix = "the file was changed or damaged after it was written; restore it from a copy or retrain the prompt"
    if want_t is None or tensor_checksum(header, data) != want_t:
        raise _fail(ChecksumError, path, "checksum", "the tensor bytes do not match the stored checksum", fix)
    if want_m is None or meta_checksum(meta) != want_m:
        raise _fail(ChecksumError, path, "meta_checksum", "the metadata does not match the stored checksum", fix)
    return True
