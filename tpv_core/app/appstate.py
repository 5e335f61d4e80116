"""The app's process-wide state without Streamlit: where it reads and writes, and the shared model cache.

The Streamlit app keeps one :class:`ModelCache` (and one job queue, :mod:`tpv_core.app.jobs`) per
process through ``st.cache_resource``; everything here is plain Python so it can be tested without a
browser. Models in the cache are read-only after loading: prompts are passed per call, so any number of
sessions (and the training worker) share them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tpv_core.paths import default_store_root

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

RESULTS_ENV = "TPV_RESULTS"

__all__ = ["ModelCache", "default_combine_rows", "default_results_dir", "default_store_root"]


# --------------------------------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------------------------------
def default_results_dir(app_dir: str | Path) -> str:
    """``$TPV_RESULTS`` when set, else ``results/`` next to the app (experiments write under it)."""
    return os.environ.get(RESULTS_ENV) or str(Path(app_dir) / "results")


def default_combine_rows() -> int | str:
    """Default number of validation rows the Combine page scores per task: ``$TPV_COMBINE_ROWS`` (an
    integer) or ``"all"`` (the full validation split)."""
    raw = os.environ.get("TPV_COMBINE_ROWS", "all").strip().lower()
    return int(raw) if raw.isdigit() else "all"


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
class ModelCache:
    """Backbones loaded once per process, shared read-only; loading is serialised per name."""

    def __init__(self, loader: Callable[..., "Backbone"] | None = None, *, device: str | None = None,
                 precision: str = "auto"):
        self._loader = loader
        self._device, self._precision = device, precision
        self._models: dict[str, "Backbone"] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _load(self, name: str, notify: Callable[[str], None] | None) -> "Backbone":
        if self._loader is not None:
            return self._loader(name)
        from tpv_core.backbones import load_backbone

        return load_backbone(name, device=self._device, precision=self._precision, notify=notify)

    def get(self, name: str, notify: Callable[[str], None] | None = None) -> "Backbone":
        with self._lock:
            if name in self._models:
                return self._models[name]
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._models:
                    return self._models[name]
            model = self._load(name, notify)
            with self._lock:
                self._models[name] = model
            return model

    def put(self, name: str, model: "Backbone") -> None:
        """Register an already loaded backbone under ``name`` (e.g. one a test or script holds)."""
        with self._lock:
            self._models[name] = model

    def __call__(self, name: str) -> "Backbone":
        return self.get(name)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._models

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)
