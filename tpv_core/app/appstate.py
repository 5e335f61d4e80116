"""The app's process-wide state without Streamlit: where it reads and writes, and the shared model cache.

The Streamlit app keeps one :class:`ModelCache` (and one job queue, :mod:`tpv_core.app.jobs`) per
process through ``st.cache_resource``; everything here is plain Python so it can be tested without a
browser. Models in the cache are read-only after loading: prompts are passed per call, so any number of
sessions (and the training worker) share them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tpv_core.paths import default_store_root

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

RESULTS_ENV = "TPV_RESULTS"

__all__ = ["ModelCache", "default_combine_rows", "default_results_dir", "default_store_root", "describe_failure",
           "device_options"]


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
    """Backbones loaded once per process, shared read-only; loading is serialised per name.

    On a GPU (what a lent machine or a researcher's workstation has) it also keeps memory in hand:

    * ``device``: where models load ("auto", "cpu", "cuda:1", ...); :meth:`set_device` moves the app to another
      device, evicting every model held on the old one;
    * one model resident per GPU unless memory allows more: after a load, least recently used models on the
      same device are evicted (and the allocator's cache emptied) while free memory is below ``headroom``
      (a fraction of the device's total); ``max_resident`` caps the count outright. CPU models are kept, as
      before (host RAM is not the constraint the app hits first);
    * a limit on concurrent forward passes per device (``forward_slots``; default 1 per GPU, no limit on CPU):
      every training step and evaluation batch of a cached model waits for a slot, so the training job and
      every session's live evaluation take turns instead of all allocating activations at once;
    * out-of-memory inside a step or batch becomes `tpv_core.device.DeviceMemoryError`, whose message says
      what to do, after the memory of the failed call is released.
    """

    def __init__(self, loader: Callable[..., "Backbone"] | None = None, *, device: str | None = None,
                 precision: str = "auto", max_resident: int | None = None, headroom: float = 0.3,
                 forward_slots: int | None = None, free_memory: Callable[[Any], tuple[int, int]] | None = None):
        self._loader = loader
        self._device, self._precision = device, precision
        self._models: dict[str, "Backbone"] = {}
        self._used: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.max_resident, self.headroom, self.forward_slots = max_resident, headroom, forward_slots
        self._free_memory = free_memory
        self._gates: dict[str, threading.BoundedSemaphore | None] = {}
        self.evicted: list[str] = []  # names evicted so far, oldest first (what the sidebar reports)

    # ---- device ------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device or "auto"

    def set_device(self, device: str | None) -> list[str]:
        """Load future models on ``device``; models on another device are evicted (returns their names)."""
        from tpv_core.device import pick_device

        target = pick_device(device)  # raises a clear ValueError for a device this machine lacks
        with self._lock:
            self._device = None if device in (None, "", "auto") else str(device)
            gone = [n for n, m in self._models.items() if getattr(m, "device", None) != target]
        for name in gone:
            self.evict(name)
        return gone

    def evict(self, name: str) -> bool:
        """Forget ``name`` and give its memory back (once no job or session holds a reference to it)."""
        from tpv_core.device import release_memory

        with self._lock:
            model = self._models.pop(name, None)
            self._used.pop(name, None)
            if model is None:
                return False
            self.evicted.append(name)
            dev = getattr(model, "device", None)
        del model
        release_memory(dev)
        return True

    def _memory(self, device) -> tuple[int, int] | None:
        """(free, total) bytes of ``device``, None where unknown (CPU)."""
        if self._free_memory is not None:
            return self._free_memory(device)
        import torch

        if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
            return torch.cuda.mem_get_info(device)
        return None

    def _make_room(self, keep: str) -> None:
        """Evict least recently used models on ``keep``'s device while the device is short of memory."""
        with self._lock:
            model = self._models.get(keep)
            dev = getattr(model, "device", None)
            same = sorted((n for n, m in self._models.items() if n != keep and getattr(m, "device", None) == dev),
                          key=lambda n: self._used.get(n, 0.0))
        for name in same:
            with self._lock:
                count = sum(1 for m in self._models.values() if getattr(m, "device", None) == dev)
            over_count = self.max_resident is not None and count > self.max_resident
            mem = self._memory(dev)
            short = mem is not None and mem[0] < self.headroom * mem[1]
            if not (over_count or short):
                break
            self.evict(name)

    # ---- forward-pass gate ---------------------------------------------------------------------------
    def _gate(self, model: "Backbone"):
        dev = getattr(model, "device", None)
        key = str(dev)
        with self._lock:
            if key not in self._gates:
                slots = self.forward_slots
                if slots is None:
                    slots = 1 if getattr(dev, "type", None) == "cuda" else 0
                self._gates[key] = threading.BoundedSemaphore(slots) if slots > 0 else None
            sem = self._gates[key]
        if sem is not None and hasattr(model, "forward_gate"):
            model.forward_gate = lambda sem=sem: sem  # a semaphore is its own context manager

    def _load(self, name: str, notify: Callable[[str], None] | None) -> "Backbone":
        if self._loader is not None:
            return self._loader(name)
        from tpv_core.backbones import load_backbone

        return load_backbone(name, device=self._device, precision=self._precision, notify=notify)

    def get(self, name: str, notify: Callable[[str], None] | None = None) -> "Backbone":
        with self._lock:
            if name in self._models:
                self._used[name] = time.monotonic()
                return self._models[name]
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._models:
                    self._used[name] = time.monotonic()
                    return self._models[name]
            from tpv_core.device import oom_guard

            import torch

            target = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            with oom_guard(target, f"loading {name}"):
                model = self._load(name, notify)
            self._gate(model)
            with self._lock:
                self._models[name] = model
                self._used[name] = time.monotonic()
            self._make_room(keep=name)
            return model

    def put(self, name: str, model: "Backbone") -> None:
        """Register an already loaded backbone under ``name`` (e.g. one a test or script holds)."""
        self._gate(model)
        with self._lock:
            self._models[name] = model
            self._used[name] = time.monotonic()

    def __call__(self, name: str) -> "Backbone":
        return self.get(name)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._models

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)


def device_options() -> list[str]:
    """Device choices for the app's setting: "auto", "cpu" and each visible GPU."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu", *[f"cuda:{i}" for i in range(n)]]


def describe_failure(exc: BaseException) -> str:
    """One line for a failed job: out-of-memory errors get the advice of `tpv_core.device.memory_advice`."""
    from tpv_core.device import DeviceMemoryError, is_out_of_memory, memory_advice, release_memory

    if isinstance(exc, DeviceMemoryError):
        return str(exc)
    if is_out_of_memory(exc):
        release_memory()
        return memory_advice("cuda" if "cuda" in str(exc).lower() else "cpu", "the job")
    return f"{type(exc).__name__}: {exc}"
