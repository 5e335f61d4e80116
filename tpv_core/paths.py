"""Where the workbench keeps things: caches (converted models, downloaded wheels), its bundled data, and the
default store.

Bundled data, the task subsets (``tasks/``) and the trained prompt zoo (``zoo/``), is found in
`project_data_dir`:

1. ``tpv_core/_data/``: the copy a non-editable install (``pip install .``) puts inside the package
   (``setup.py`` copies ``data/tasks`` and ``data/zoo`` there when it builds the wheel);
2. else ``data/`` beside ``tpv_core/``: a source checkout or an editable install.

``$TPV_DATA_DIR`` overrides where the task subsets are read from (`tasks_data_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "TPV_CACHE_DIR"
ENV_DATA_DIR = "TPV_DATA_DIR"
STORE_ENV = "TPV_STORE"
PACKAGED_DATA = "_data"


def cache_dir() -> Path:
    """The cache root: ``$TPV_CACHE_DIR`` if set, else ``~/.cache/tpv-workbench``; created on demand."""
    env = os.environ.get(ENV_CACHE_DIR)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "tpv-workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def project_data_dir() -> Path:
    """The project's data folder (``tasks/`` and ``zoo/``): the installed package's copy, else ``data/`` of the
    source tree."""
    packaged = Path(__file__).resolve().parent / PACKAGED_DATA
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "data"


def tasks_data_dir() -> Path:
    """The folder of bundled task folders: ``$TPV_DATA_DIR`` (a folder holding ``tasks/``, or the folder of task
    folders itself) when set, else ``<project data>/tasks``."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        p = Path(env).expanduser()
        return p / "tasks" if (p / "tasks").is_dir() else p
    return project_data_dir() / "tasks"


def bundled_zoo_dir() -> Path:
    """The trained prompt library shipped with the project (``<project data>/zoo``)."""
    return project_data_dir() / "zoo"


def default_store_root() -> str:
    """The one rule for where the store is, used by every ``tpv`` command and the app: ``$TPV_STORE`` when
    set, else the project's ``data/zoo`` (wherever the command runs from)."""
    env = os.environ.get(STORE_ENV, "").strip()
    return str(Path(env).expanduser()) if env else str(bundled_zoo_dir())
