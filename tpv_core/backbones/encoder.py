"""Bidirectional encoder (BERT / MiniLM sentence encoder) backbones.

Sequence: [CLS] | prompt | input tokens | [SEP]. The output is mean-pooled over the non-padding
positions (prompt rows included). A class's score is the cosine between the pooled output and the
frozen, prompt-free, mean-pooled embedding of the label's description, divided by a temperature.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from tpv_core.backbones.base import Backbone, InputBatch, LabelSet, masked_mean

DEFAULT_TEMPERATURE = 0.05


class EncoderBackbone(Backbone):
    family = "encoder"
    prompt_position = 1  # [CLS] | prompt | input

    def __init__(self, *, temperature: float = DEFAULT_TEMPERATURE, **kwargs) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def _closing_ids(self) -> set[int]:
        return {i for i in (self.tokenizer.sep_token_id, self.tokenizer.eos_token_id) if i is not None}

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        if ids and ids[-1] in self._closing_ids() and max_length > 1:
            return ids[: max_length - 1] + [ids[-1]]
        return ids[:max_length]

    def _fit(self, batch: InputBatch, L: int) -> InputBatch:
        """Shorten the inputs when prompt + input exceed the position embeddings (keeping the start and [SEP])."""
        limit = self.max_positions
        if limit is None or L + batch.input_ids.shape[1] <= limit:
            return batch
        if L >= limit - 1:
            raise ValueError(f"a prompt of {L} soft tokens does not fit backbone {self.name!r} "
                             f"(at most {limit} positions including [CLS])")
        warnings.warn(f"{self.name}: inputs truncated to {limit - L} tokens so that prompt ({L}) + input fit "
                      f"{limit} positions; pass a smaller max_length to silence this", stacklevel=3)
        return self.collate(batch.rows(), max_length=limit - L, chat=batch.chat)

    def pooled(self, batch: InputBatch, prompt: torch.Tensor | None) -> torch.Tensor:
        """Mean-pooled final hidden states (B, d) float32 over the real positions (prompt included)."""
        emb, mask = self.embed(batch, prompt)
        with self._autocast():
            hidden = self.model(inputs_embeds=emb, attention_mask=mask)[0]
        return masked_mean(hidden, mask)

    def features(self, batch: InputBatch, prompt: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooled(batch, prompt)

    def description_embeddings(self, labels: LabelSet) -> torch.Tensor:
        """(C, d) unit-norm, prompt-free embeddings of the label descriptions (cached per label set)."""

        def make() -> torch.Tensor:
            with torch.no_grad():
                b = self.batch(list(labels.descriptions))
                return F.normalize(self.pooled(b, None), dim=-1).detach()

        return self._cached(("descriptions", labels.descriptions), make)

    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        desc = self.description_embeddings(labels)
        return F.normalize(self.pooled(batch, prompt), dim=-1) @ desc.T / self.temperature

    def loss(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet, targets: torch.Tensor) -> torch.Tensor:
        targets = self._check_targets(targets, batch, labels)
        return F.cross_entropy(self.label_scores(batch, prompt, labels), targets)
