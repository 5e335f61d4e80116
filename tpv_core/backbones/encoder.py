"""Bidirectional encoder (BERT / MiniLM sentence encoder) backbones.

Sequence: [CLS] | prompt | input tokens | [SEP]. The output is mean-pooled over the non-padding
positions (prompt rows included). Two readouts:

* ``descriptions`` (every task by default): a class's score is the cosine between the pooled output and
  the frozen, prompt-free, mean-pooled embedding of the label's description, divided by a temperature.
* ``similarity`` (two-field tasks with `TaskSpec.similarity_targets`: NLI, paraphrase, STS-B): the two
  fields are encoded apart, each as [CLS] | prompt | field | [SEP] with the same prompt, and the class is
  read from their cosine s: score_c = -(s - t_c)^2 / temperature, where t_c is the class's target cosine
  (entailment 1.0, neutral 0.5, contradiction 0.0; STS-B score / 5). This is how sentence encoders are
  trained to be used, and linear probes show the joint input cannot do it on MiniLM (docs/REPRODUCTION.md,
  section 7). The input row carries both fields as [CLS] a [SEP] b [SEP]; the readout splits it at the inner [SEP].
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from tpv_core.backbones.base import Backbone, InputBatch, LabelSet, masked_mean

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.tasks.spec import TaskSpec

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

    # ---- inputs --------------------------------------------------------------------------
    def readout(self, task: "TaskSpec") -> str:
        return "similarity" if task.similarity_targets else "descriptions"

    def format(self, task: "TaskSpec", example: dict) -> str:
        if not task.similarity_targets:
            return super().format(task, example)
        sep = self.tokenizer.sep_token
        if not sep:
            raise ValueError(f"{self.name}: the tokenizer has no separator token, needed by the similarity "
                             f"readout of {task.name}")
        return task.format(example, self.family, sep=f" {sep} ")

    def _inner_sep(self, ids: Sequence[int]) -> int | None:
        """Index of the separator between the two fields of a pair row ([CLS] a [SEP] b [SEP]), if any."""
        sep = self.tokenizer.sep_token_id
        return next((k for k in range(1, len(ids) - 1) if ids[k] == sep), None)

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        if not ids or ids[-1] not in self._closing_ids() or max_length <= 1:
            return ids[:max_length]
        inner = self._inner_sep(ids)
        if inner is None or max_length < 5:
            return ids[: max_length - 1] + [ids[-1]]
        # a pair row: shorten the longer field first, keep [CLS], the inner [SEP] and the closing token
        a, b, budget = ids[1:inner], ids[inner + 1: -1], max_length - 3
        na = min(len(a), max(budget - len(b), (budget + 1) // 2))
        nb = min(len(b), budget - na)
        return [ids[0], *a[:na], ids[inner], *b[:nb], ids[-1]]

    def _split_pairs(self, batch: InputBatch) -> InputBatch:
        """The 2B rows [CLS] a [SEP] (first B) and [CLS] b [SEP] (last B) of a batch of pair rows."""
        firsts, seconds = [], []
        for row in batch.rows():
            inner = self._inner_sep(row)
            if inner is None:
                raise ValueError(f"{self.name}: a row of a similarity-readout task has no separator between its "
                                 "two fields; format it with Backbone.format(task, row)")
            firsts.append(row[: inner + 1])
            seconds.append(row[:1] + row[inner + 1:])
        return self.collate(firsts + seconds, chat=batch.chat)

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

    def pair_similarity(self, batch: InputBatch, prompt: torch.Tensor | None) -> torch.Tensor:
        """(B,) cosine between the two fields of each pair row, each encoded with the prompt."""
        z = F.normalize(self.pooled(self._split_pairs(batch), prompt), dim=-1)
        n = len(batch)
        return (z[:n] * z[n:]).sum(-1)

    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        if labels.targets:
            s = self.pair_similarity(batch, prompt)
            t = torch.tensor(labels.targets, dtype=s.dtype, device=s.device)
            return -((s[:, None] - t[None, :]) ** 2) / self.temperature
        desc = self.description_embeddings(labels)
        return F.normalize(self.pooled(batch, prompt), dim=-1) @ desc.T / self.temperature

    def loss_terms(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet,
                   targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        targets = self._check_targets(targets, batch, labels)
        scores = self.label_scores(batch, prompt, labels)
        return F.cross_entropy(scores, self._to_device(targets), reduction="sum"), len(batch)
