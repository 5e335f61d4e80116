"""An exclusive lock on a file target that serialises writers across threads and processes.

`file_lock(lock_path)` holds ``flock`` on ``lock_path`` (created when missing, removed on release). The kernel
drops the lock when its holder dies, so a killed writer never blocks the next one. Because the holder
removes the lock file on release, a waiter that acquired the lock of an already-removed file tries again on
the current one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from tpv_core.store_schema import StoreLockedError


@contextlib.contextmanager
def file_lock(lock_path: str | Path, timeout: float = 30.0, what: str = "another writer") -> Iterator[None]:
    """Hold the lock at ``lock_path``; after ``timeout`` seconds of waiting, `StoreLockedError` naming ``what``."""
    lock = Path(lock_path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise StoreLockedError(f"{what} has held its lock for over {timeout:g} s; retry when it is done",
                                       lock) from None
            time.sleep(0.01)
            continue
        try:  # the holder before us may have removed the lock file: then ours is stale, take a new one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
