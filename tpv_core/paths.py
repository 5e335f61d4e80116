"""Where the workbench keeps things: caches (converted models, downloaded wheels) and the default store."""

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


STORE_ENV = "TPV_STORE"


def project_data_dir() -> Path:
    """The project's ``data/`` folder (bundled task subsets and the prompt zoo)."""
    return Path(__file__).resolve().parent.parent / "data"


def default_store_root() -> str:
    """The one rule for where the store is, used by every ``tpv`` command and the app: ``$TPV_STORE`` when
    set, else the project's ``data/zoo`` (wherever the command runs from)."""
    env = os.environ.get(STORE_ENV, "").strip()
    return str(Path(env).expanduser()) if env else str(project_data_dir() / "zoo")
