"""Where the workbench keeps its caches (converted models, downloaded wheels)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "TPV_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root: ``$TPV_CACHE_DIR`` if set, else ``~/.cache/tpv-workbench``; created on demand."""
    env = os.environ.get(ENV_CACHE_DIR)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "tpv-workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root
