"""App-level helpers without Streamlit: shared model cache, store signatures, PEFT zips, live evaluation.

The Streamlit app keeps one :class:`ModelCache` (and one job queue) per process through
``st.cache_resource``; everything here is plain Python so it can be tested without a browser.
Models in the cache are read-only after loading: prompts are passed per call, so any number of
sessions (and the training worker) share them.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tpv_core.backbones.base import Backbone
    from tpv_core.evaluation import EvalResult, PreparedSplit
    from tpv_core.prompts import Origin, SoftPrompt

STORE_ENV = "TPV_STORE"
RESULTS_ENV = "TPV_RESULTS"
BACKBONE_ENV = "TPV_BACKBONE"
DEFAULT_BACKBONE = "minilm-l6"


# --------------------------------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------------------------------
def default_store_root(app_dir: str | Path) -> str:
    """``$TPV_STORE`` when set, else ``data/zoo`` next to the app."""
    return os.environ.get(STORE_ENV) or str(Path(app_dir) / "data" / "zoo")


def default_results_dir(app_dir: str | Path) -> str:
    """``$TPV_RESULTS`` when set, else ``results/`` next to the app (experiments write under it)."""
    return os.environ.get(RESULTS_ENV) or str(Path(app_dir) / "results")


def default_combine_rows() -> int | str:
    """Default number of validation rows the Combine page scores per task: ``$TPV_COMBINE_ROWS`` (an
    integer) or ``"all"`` (the full validation split)."""
    raw = os.environ.get("TPV_COMBINE_ROWS", "all").strip().lower()
    return int(raw) if raw.isdigit() else "all"


def store_signature(root: str | Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, mtime_ns, size) of every stored prompt: changes whenever the store does, so it
    can key caches of the index and of loaded prompts."""
    base = Path(root)
    if not base.is_dir():
        return ()
    out = []
    for p in sorted(base.glob("*/*/*.safetensors")):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p.relative_to(base)), st.st_mtime_ns, st.st_size))
    return tuple(out)


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


# --------------------------------------------------------------------------------------------------
# background warm-up (UMAP's numba JIT)
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# PEFT adapters as zip files (upload / download)
# --------------------------------------------------------------------------------------------------
MAX_ZIP_BYTES = 512 * 1024 * 1024


def dir_to_zip(folder: str | Path, arc_root: str | None = None) -> bytes:
    """Zip every file under ``folder`` (inside a top folder ``arc_root`` when given)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                zf.write(p, f"{arc_root}/{rel}" if arc_root else rel)
    return buf.getvalue()


def adapter_name(text: str) -> str:
    """A file-name safe stem, e.g. ``minilm-l6_sst2_vocab5000-s0-L20``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "adapter"


def peft_zip(tensor: "torch.Tensor", *, base_model: str, family: str, origin: "Origin | None" = None,
             metadata: Mapping[str, Any] | None = None, name: str = "adapter") -> bytes:
    """A PEFT prompt-tuning adapter (see :func:`tpv_core.store.export_peft`) as zip bytes."""
    from tpv_core.store import export_peft

    with tempfile.TemporaryDirectory(prefix="tpv-export-") as tmp:
        out = export_peft(tensor, Path(tmp) / "adapter", base_model=base_model, family=family, origin=origin,
                          metadata=dict(metadata or {}))
        return dir_to_zip(out, adapter_name(name))


def soft_prompt_zip(prompt: "SoftPrompt", *, family: str | None = None, base_model: str | None = None) -> bytes:
    """A stored prompt P as a PEFT adapter zip (with our origin file, so it imports back losslessly)."""
    from tpv_core.store import export_soft_prompt

    fam = family or prompt.metadata.get("backbone_family") or "decoder"
    with tempfile.TemporaryDirectory(prefix="tpv-export-") as tmp:
        out = export_soft_prompt(prompt, Path(tmp) / "adapter", base_model=base_model, family=fam)
        return dir_to_zip(out, adapter_name(f"{prompt.backbone}_{prompt.task}_{prompt.origin.id}"))


def vector_zip(prompt: "SoftPrompt", *, family: str | None = None, base_model: str | None = None) -> bytes:
    """The task prompt vector tau = P - P0 in a PEFT adapter container (``prompt_embeddings`` = tau).

    PEFT would prepend tau as if it were a prompt; the metadata file marks it as a vector and names
    its origin so the library (or a reader) can add it to any P0 of the same backbone.
    """
    tau = prompt.vector()
    fam = family or prompt.metadata.get("backbone_family") or "decoder"
    meta = {"kind": "task_prompt_vector", "task": prompt.task, "backbone": prompt.backbone,
            "origin": prompt.origin.spec(), "note": "prompt_embeddings holds tau = P - P0, not a prompt"}
    return peft_zip(tau.tensor, base_model=base_model or prompt.metadata.get("backbone_model_id") or prompt.backbone,
                    family=fam, metadata=meta, name=f"{prompt.backbone}_{prompt.task}_{prompt.origin.id}_vector")


class AdapterZipError(ValueError):
    """An uploaded zip that is not a usable PEFT prompt adapter."""


def extract_adapter_zip(data: bytes, dest: str | Path) -> Path:
    """Unpack an uploaded adapter zip safely (no absolute paths, no ``..``, size-capped) and return the
    folder that holds ``adapter_config.json``."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise AdapterZipError("the upload is not a zip file; zip the adapter folder (adapter_config.json + "
                              "adapter_model.safetensors)") from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
                raise AdapterZipError(f"unsafe path in zip: {name!r}")
            total += info.file_size
            if total > MAX_ZIP_BYTES:
                raise AdapterZipError("the zip unpacks to more than 512 MB; a prompt adapter is tiny")
        zf.extractall(dest)
    configs = sorted(dest.rglob("adapter_config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise AdapterZipError("no adapter_config.json in the zip; is this a PEFT adapter?")
    return configs[0].parent


def import_adapter_zip(data: bytes, *, task: str, backbone: str, origin: "Origin | None" = None) -> "SoftPrompt":
    """Read an uploaded PEFT prompt adapter zip into a :class:`SoftPrompt` (origin from the zip's
    ``tpv_origin.safetensors`` unless given)."""
    from tpv_core.store import import_peft

    with tempfile.TemporaryDirectory(prefix="tpv-import-") as tmp:
        folder = extract_adapter_zip(data, tmp)
        prompt = import_peft(folder, task=task, backbone=backbone, origin=origin)
    prompt.metadata["imported_from"] = "upload"
    return prompt


def adapter_zip_info(data: bytes) -> dict[str, Any]:
    """What an uploaded adapter says about itself: config, whether it carries our origin file, its
    metadata (task, backbone) when exported by this library."""
    import json

    from tpv_core.store import METADATA_FILE, ORIGIN_FILE

    with tempfile.TemporaryDirectory(prefix="tpv-peek-") as tmp:
        folder = extract_adapter_zip(data, tmp)
        info: dict[str, Any] = {"config": json.loads((folder / "adapter_config.json").read_text())}
        info["has_origin"] = (folder / ORIGIN_FILE).is_file()
        meta = folder / METADATA_FILE
        info["metadata"] = json.loads(meta.read_text()) if meta.is_file() else {}
    return info


# --------------------------------------------------------------------------------------------------
# combinations
# --------------------------------------------------------------------------------------------------
def combo_task_name(terms: Sequence[tuple[str, float]]) -> str:
    """Store task name of a combination, e.g. ``combo:mnli+0.5qnli`` (weight 1 left out, ``-`` for negative
    weights); the weights themselves go into the prompt's metadata."""
    parts = []
    for i, (task, w) in enumerate(terms):
        sign = "-" if w < 0 else ("+" if i else "")
        mag = "" if abs(w) == 1 else f"{abs(w):g}"
        parts.append(f"{sign}{mag}{task}")
    return "combo:" + "".join(parts)


def interleaved_evaluation(
    backbone: "Backbone",
    prompt: "torch.Tensor",
    prepared: Mapping[str, "PreparedSplit"],
    *,
    batch_size: int = 32,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[tuple[str, "EvalResult"]]:
    """Evaluate ``prompt`` on several tasks, one batch of each in turn, yielding ``(task, running
    result)`` after every batch: every task gets an estimate after its first batch, then they all
    refine to the full split."""
    from tpv_core.evaluation import iter_evaluate

    iters = {name: iter_evaluate(backbone, p.task, prompt, p, batch_size=batch_size, cancel=cancel)
             for name, p in prepared.items()}
    while iters:
        for name in list(iters):
            try:
                yield name, next(iters[name])
            except StopIteration:
                del iters[name]
