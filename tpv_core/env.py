"""Process environment the workbench reads or sets, in one place.

- `offline_requested`: whether the user asked for offline mode (any of `OFFLINE_VARS` set to 1/true/yes/on);
  models and datasets then never go to the Hugging Face hub.
- `configure_openmp`: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it. It must run before torch loads,
  so `tpv_core/__init__.py` calls it first: OpenMP threads that spin while waiting make torch about 10x
  slower as soon as another process wants the same cores (`benchmarks/bench_threads.py` measures it);
  passive waiting costs nothing alone.
"""

from __future__ import annotations

import os

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def offline_requested() -> bool:
    """True when any of ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE`` is set to 1/true."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in OFFLINE_VARS)


def configure_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless already set (effective only before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
