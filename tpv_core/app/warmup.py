"""A background warm-up: one function run once in a daemon thread (the app warms UMAP's numba JIT)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Warmup:
    """A function run once in a daemon thread; ``ready`` is set when it has finished (or failed)."""

    fn: Callable[[], Any]
    name: str = "warmup"
    ready: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    seconds: float | None = None
    _thread: threading.Thread | None = None

    def start(self) -> "Warmup":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tpv-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.fn()
        except Exception as exc:  # noqa: BLE001 - reported to the user, never raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.perf_counter() - t0
            self.ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)
