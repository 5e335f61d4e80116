"""Atomic writes: a crash leaves the old file (or folder) or the new one, never half of it.

- `atomic_write_bytes` / `atomic_write_text`: temp file in the same folder, fsync, rename, fsync the folder.
- `atomic_dir`: build a whole folder in a temporary sibling, then rename it into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text"]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # make the rename itself durable (not supported everywhere)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created); readable by all (0644), like a normal file."""
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
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_dir(final: str | Path, build: Callable[[Path], None]) -> Path:
    """Call ``build(tmp)`` on an empty temporary sibling of ``final``, then rename it to ``final``.

    When another writer put ``final`` in place first, theirs is kept (both built the same thing); any other
    failure leaves no partial folder behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
