"""Which backbone family a model is, from its ``config.json`` alone (no weights loaded).

``model_type`` decides: T5-like encoder-decoders are ``seq2seq``, causal LMs ``decoder``, BERT-like
sentence encoders ``encoder``. An unknown ``model_type`` is an error that lists the supported ones,
never a guess. Kept free of the provider table so it can move with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEQ2SEQ_TYPES = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers", "bart", "mbart", "pegasus"})
DECODER_TYPES = frozenset({
    "llama", "gpt2", "gpt_neo", "gpt_neox", "gptj", "mistral", "mixtral", "qwen2", "qwen3", "phi", "phi3", "gemma",
    "gemma2", "gemma3_text", "opt", "falcon", "bloom", "smollm3", "olmo", "olmo2", "granite", "stablelm",
    "starcoder2", "cohere"})
ENCODER_TYPES = frozenset({
    "bert", "roberta", "distilbert", "mpnet", "xlm-roberta", "electra", "deberta", "deberta-v2", "albert",
    "modernbert", "camembert", "nomic_bert"})


class UnsupportedModelError(ValueError):
    """A model folder whose family the workbench cannot tell; the message lists what is supported."""


@dataclass(frozen=True)
class FolderModel:
    """What ``config.json`` says about a model folder."""

    path: str
    model_type: str
    family: str
    architectures: tuple[str, ...]
    width: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "model_type": self.model_type, "family": self.family,
                "architectures": list(self.architectures), "width": self.width}


def supported_types() -> str:
    return (f"seq2seq: {', '.join(sorted(SEQ2SEQ_TYPES))}; decoder: {', '.join(sorted(DECODER_TYPES))}; "
            f"encoder: {', '.join(sorted(ENCODER_TYPES))}")


def family_of(model_type: str, is_encoder_decoder: bool = False) -> str:
    """seq2seq / decoder / encoder for a transformers ``model_type``."""
    mtype = str(model_type or "").lower()
    if mtype in SEQ2SEQ_TYPES or (is_encoder_decoder and mtype not in DECODER_TYPES | ENCODER_TYPES):
        return "seq2seq"
    if mtype in DECODER_TYPES:
        return "decoder"
    if mtype in ENCODER_TYPES:
        return "encoder"
    raise UnsupportedModelError(f"unsupported model_type {mtype or '(none)'!r}: the workbench knows {supported_types()}")


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder).expanduser()
    cfg = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    if not cfg.is_file():
        raise UnsupportedModelError(f"folder {folder} has no config.json: not a transformers model folder")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UnsupportedModelError(f"{cfg} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{cfg} is not a JSON object")
    return data


def detect_folder(folder: str | Path) -> FolderModel:
    """Family, model type and width of a model folder, from its ``config.json``."""
    data = read_config(folder)
    mtype = str(data.get("model_type") or "")
    try:
        family = family_of(mtype, bool(data.get("is_encoder_decoder")))
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{Path(folder)}: {e}") from None
    width = data.get("d_model") or data.get("hidden_size") or data.get("n_embd")
    return FolderModel(str(Path(folder).expanduser().resolve()), mtype, family,
                       tuple(data.get("architectures") or ()), int(width) if width else None)
