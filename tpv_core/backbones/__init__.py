"""Frozen backbones behind one soft-prompt interface: decoder (LLaMA/SmolLM2), seq2seq (T5), encoder (MiniLM)."""

from tpv_core.backbones.base import Backbone, InputBatch, LabelSet
from tpv_core.backbones.decoder import DecoderBackbone
from tpv_core.backbones.encoder import EncoderBackbone
from tpv_core.backbones.registry import (
    ModelUnavailableError,
    ProviderInfo,
    available_offline,
    detect_family,
    list_providers,
    load_backbone,
)
from tpv_core.backbones.seq2seq import Seq2SeqBackbone

__all__ = [
    "Backbone", "InputBatch", "LabelSet", "DecoderBackbone", "Seq2SeqBackbone", "EncoderBackbone",
    "ModelUnavailableError", "ProviderInfo", "available_offline", "detect_family", "list_providers", "load_backbone",
]
