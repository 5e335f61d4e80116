"""``tpv store verify``: check every file of a store in full, add missing checksums, clean stale temp files.

Each stored prompt is loaded as :func:`tpv_core.store.load_prompt` would (schema, folder, checksums,
finite values). Files written before checksums existed are reported as ``no-checksum``; with
``fix_missing`` their bytes are rewritten with both checksums added (the tensors and every other
metadata field unchanged) under the file's lock, then loaded again to prove the result. Hidden temp files
(``.*.tmp``) left by a killed save and older than ``stale_after_s`` are removed; checkpoints of
interrupted runs (``.*.ckpt``) are listed, not removed (``tpv train --resume`` continues them).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load as st_load

from tpv_core.atomic import atomic_write_bytes
from tpv_core.store import PromptStore, StoreError, _with_checksums, load_prompt
from tpv_core.store_schema import META_KEY

STATUSES = ("ok", "fixed", "no-checksum", "bad", "removed-tmp", "checkpoint")


@dataclass
class VerifyItem:
    path: str
    status: str  # one of STATUSES
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _add_checksums(store: PromptStore, path: Path) -> None:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = json.loads(header["__metadata__"][META_KEY])
    tensors = st_load(blob)
    with store.lock(path):
        if path.read_bytes() != blob:
            raise StoreError(f"{path}: changed while being fixed; run verify again", path)
        atomic_write_bytes(path, _with_checksums({k: tensors[k] for k in ("prompt", "origin")}, meta))


def verify_store(root: str | Path, fix_missing: bool = False, stale_after_s: float = 3600.0,
                 now: float | None = None) -> list[VerifyItem]:
    """One :class:`VerifyItem` per stored prompt, removed temp file and checkpoint under ``root``."""
    store = PromptStore(root)
    now = time.time() if now is None else now
    items: list[VerifyItem] = []
    if not store.root.is_dir():
        raise FileNotFoundError(f"{store.root} is not a folder; give the store root (e.g. data/zoo)")
    for path in store.files():
        try:
            prompt = load_prompt(path, layout=store.layout_of(path))
        except StoreError as exc:
            items.append(VerifyItem(str(path), "bad", str(exc)))
            continue
        if prompt.metadata.get("checksum"):
            items.append(VerifyItem(str(path), "ok"))
            continue
        if not fix_missing:
            items.append(VerifyItem(str(path), "no-checksum", "written before checksums; --fix-missing adds them"))
            continue
        try:
            _add_checksums(store, path)
            again = load_prompt(path, layout=store.layout_of(path))
            if not again.metadata.get("checksum"):
                raise StoreError(f"{path}: checksum was not written", path)
        except (StoreError, OSError) as exc:
            items.append(VerifyItem(str(path), "bad", f"could not add checksums: {exc}"))
            continue
        items.append(VerifyItem(str(path), "fixed", "checksums added"))
    for tmp in sorted(store.root.rglob(".*.tmp")):
        try:
            age = now - tmp.lstat().st_mtime
        except FileNotFoundError:
            continue
        if age > stale_after_s:
            tmp.unlink(missing_ok=True)
            note = f"temp file of an interrupted save, {age / 60:.0f} min old"
            items.append(VerifyItem(str(tmp), "removed-tmp", note))
    for ckpt in sorted(store.root.glob("*/*/.*.ckpt")):
        items.append(VerifyItem(str(ckpt), "checkpoint",
                                "checkpoint of an interrupted training run; `tpv train ... --resume` continues it"))
    return items
