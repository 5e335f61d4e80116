"""The backbone interface: one frozen language model, soft prompts passed per call.

A backbone tokenizes and pads task inputs, prepends a soft prompt P (L x d) to their embeddings,
scores a task's label set (rank classification), computes the prompt-tuning loss and, for the
generative families, generates. The model is frozen and read-only after load so that several
threads (app sessions, evaluation workers) can share one backbone; nothing about a call is kept on
``self`` except caches keyed by a label set, guarded by a lock.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from tpv_core.device import autocast
from tpv_core.tasks.spec import LabelSet, TaskSpec

FAMILIES = ("decoder", "seq2seq", "encoder")


@dataclass
class InputBatch:
    """A tokenized, right-padded batch on the backbone's device.

    ``lengths``: number of real tokens per row. ``chat``: the rows were wrapped with the chat template
    (decoder family: the answer then follows the assistant header without a leading space).
    """

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    lengths: torch.Tensor  # (B,) long
    chat: bool = False

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self) -> list[list[int]]:
        """The real (unpadded) token ids of each row."""
        ids = self.input_ids.tolist()
        return [r[:n] for r, n in zip(ids, self.lengths.tolist())]


def _prefer_eager_attention(model: torch.nn.Module) -> None:
    """On CPU under bf16 autocast, plain matmul + softmax attention instead of SDPA.

    The bf16 backward of PyTorch's CPU flash-attention kernel is slow at prompt-tuning lengths (a quarter
    of a SmolLM2 step; benchmarks/README.md, "Prototypes": eager is 1.31x faster per training step on
    SmolLM2 and 1.48x on MiniLM, with the same predictions). Models without the switch keep theirs."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None or getattr(model.config, "_attn_implementation", None) == "eager":
        return
    try:
        setter("eager")
    except (ValueError, NotImplementedError):  # pragma: no cover - an architecture without eager attention
        pass


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, d) float32 mean of ``hidden`` (B, T, d) over the positions where ``mask`` (B, T) is set."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1.0)


class Backbone(abc.ABC):
    """A frozen model of one family behind the common soft-prompt interface (see module docstring)."""

    family: str = ""

    def __init__(
        self,
        *,
        name: str,
        model_id: str,
        revision: str,
        model: torch.nn.Module,
        tokenizer: Any,
        device: torch.device,
        compute_dtype: torch.dtype | None,
    ) -> None:
        self.name = name
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        self.compute_dtype = compute_dtype
        self.tokenizer = tokenizer
        model.requires_grad_(False)
        model.eval()
        self.model = model.to(self.device)
        if self.device.type == "cpu" and compute_dtype == torch.bfloat16:
            _prefer_eager_attention(self.model)
        emb = self.model.get_input_embeddings()
        self.vocab_size = int(emb.weight.shape[0])
        self.dim = int(emb.weight.shape[1])
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._lock = threading.Lock()
        self._label_cache: dict[Hashable, Any] = {}

    # ---- description -----------------------------------------------------------------
    def __repr__(self) -> str:
        prec = "fp32" if self.compute_dtype is None else str(self.compute_dtype).replace("torch.", "")
        return (f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r}, family={self.family!r}, "
                f"d={self.dim}, vocab={self.vocab_size}, device={self.device}, precision={prec})")

    @property
    def max_positions(self) -> int | None:
        """Longest sequence (prompt included) the model's position embeddings allow, None if unbounded."""
        if self.family == "seq2seq":
            return None  # relative positions (T5)
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    # ---- common helpers ----------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, getattr(self.model.config, "pad_token_id", None), tok.eos_token_id, 0):
            if isinstance(cand, int):
                return cand
        return 0

    def input_embeddings(self) -> torch.Tensor:
        """The (V, d) input embedding matrix as a detached fp32 CPU tensor (a view when already fp32 on CPU)."""
        return self.model.get_input_embeddings().weight.detach().to("cpu", torch.float32)

    def check_prompt(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """Validate a soft prompt and move it to the device as float32 (keeping its autograd graph).

        Returns None for no prompt (``None``), a (0, d) tensor stays a (0, d) tensor.
        """
        if prompt is None:
            return None
        if not isinstance(prompt, torch.Tensor):
            raise ValueError(f"prompt must be a torch.Tensor of shape (L, {self.dim}) for backbone {self.name!r}, "
                             f"got {type(prompt).__name__}")
        if prompt.dim() != 2 or prompt.shape[1] != self.dim:
            raise ValueError(f"prompt has shape {tuple(prompt.shape)} but backbone {self.name!r} needs (L, {self.dim}) "
                             f"(L soft tokens of width d={self.dim})")
        if not prompt.is_floating_point():
            raise ValueError(f"prompt must be a floating point tensor, got {prompt.dtype} for backbone {self.name!r}")
        return prompt.to(device=self.device, dtype=torch.float32)

    def prompt_length(self, prompt: torch.Tensor | None) -> int:
        return 0 if prompt is None else int(prompt.shape[0])

    def word_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of token ids as float32 (B, T, d) (no gradient: the table is frozen)."""
        return self.model.get_input_embeddings()(ids).float()

    def _autocast(self):
        return autocast(self.device, self.compute_dtype)

    def _cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """A per-backbone cache (label token ids, description embeddings), safe across threads."""
        with self._lock:
            if key in self._label_cache:
                return self._label_cache[key]
        value = make()
        with self._lock:
            return self._label_cache.setdefault(key, value)

    def _check_targets(self, targets: torch.Tensor, batch: InputBatch, labels: LabelSet) -> torch.Tensor:
        targets = torch.as_tensor(targets, device=self.device).long().view(-1)
        if targets.shape[0] != len(batch):
            raise ValueError(f"{targets.shape[0]} targets for a batch of {len(batch)} rows")
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= len(labels)):
            raise ValueError(f"targets must be class indices in 0..{len(labels) - 1}, got {targets.tolist()}")
        return targets

    # ---- task inputs ---------------------------------------------------------------------
    def format(self, task: TaskSpec, example: dict) -> str:
        """The input text of a task row for this backbone (`TaskSpec.format` for the family)."""
        return task.format(example, self.family)

    def readout(self, task: TaskSpec) -> str:
        """How this backbone reads a class of ``task``: "verbalisers" (generative families), "descriptions"
        or "similarity" (encoder). Stored with every tuned prompt: a prompt only means something under the
        readout it was tuned for."""
        return "verbalisers"

    # ---- tokenization --------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], chat: bool = False) -> list[list[int]]:
        """Token ids of already templated inputs, with the family's special tokens."""
        if isinstance(texts, str):
            texts = [texts]
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    @abc.abstractmethod
    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        """Cut one row to ``max_length`` tokens the way the family needs."""

    def _is_chat(self, ids: list[list[int]]) -> bool:
        return False

    def collate(self, ids: Sequence[Sequence[int]], max_length: int | None = None,
                chat: bool | None = None) -> InputBatch:
        """Right-pad token id rows to the longest row (after truncation to ``max_length`` input tokens;
        the soft prompt does not count). ``chat`` is detected from the ids when not given."""
        rows = [list(map(int, r)) for r in ids]
        if not rows:
            raise ValueError("cannot collate an empty batch")
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be >= 1, got {max_length}")
            rows = [self._truncate(r, max_length) if len(r) > max_length else r for r in rows]
        if chat is None:
            chat = self._is_chat(rows)
        width = max(1, max(len(r) for r in rows))
        pad = self.pad_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        return InputBatch(input_ids.to(self.device), mask.to(self.device), lengths.to(self.device), bool(chat))

    def batch(self, texts: Sequence[str], chat: bool = False, max_length: int | None = None) -> InputBatch:
        """Tokenize and collate."""
        return self.collate(self.tokenize(texts, chat=chat), max_length=max_length, chat=chat and self._chat_ok())

    def _chat_ok(self) -> bool:
        return False

    # ---- the family-specific part ----------------------------------------------------------
    prompt_position = 0  # where the L prompt rows go among the input positions (encoder: after [CLS])

    def _fit(self, batch: InputBatch, L: int) -> InputBatch:
        """The batch, shortened where prompt + input would not fit the model (families with a limit)."""
        return batch

    def embed(self, batch: InputBatch, prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_embeds (B, L+T, d) float32, attention mask (B, L+T) long) with the prompt inserted at
        ``prompt_position``."""
        prompt = self.check_prompt(prompt)
        L = self.prompt_length(prompt)
        batch = self._fit(batch, L)
        emb = self.word_embed(batch.input_ids)
        mask = batch.attention_mask
        if L:
            B, at = emb.shape[0], self.prompt_position
            emb = torch.cat([emb[:, :at], prompt.unsqueeze(0).expand(B, -1, -1), emb[:, at:]], dim=1)
            ones = torch.ones(B, L, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1)
        return emb, mask

    @abc.abstractmethod
    def features(self, batch: InputBatch, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) float32: the hidden state the family reads its answer from (encoder: the pooled output;
        decoder: the last input position, which predicts the label word; seq2seq: the mean encoder
        output). Used by `tpv_core.probe` to ask what a frozen backbone already separates."""

    @abc.abstractmethod
    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        """(B, C) float32 class scores (higher = more likely)."""

    @abc.abstractmethod
    def loss(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss, differentiable w.r.t. ``prompt`` only."""

    def generate(self, batch: InputBatch, prompt: torch.Tensor | None, max_new_tokens: int = 8) -> list[str]:
        raise NotImplementedError(
            f"backbone {self.name!r} is a {self.family} model and cannot generate text; "
            "use rank classification (label_scores) instead"
        )

    # ---- shared by the generative families -------------------------------------------------
    def _lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits in float32 for gathered hidden states (N, d), outside autocast."""
        head = self.model.get_output_embeddings()
        with torch.autocast(device_type=self.device.type, enabled=False):
            h = hidden.float()
            if getattr(self.model.config, "scale_decoder_outputs", False) and self.family == "seq2seq":
                h = h * (self.model.config.d_model ** -0.5)  # T5 with tied embeddings
            bias = getattr(head, "bias", None)
            logits = torch.nn.functional.linear(h, head.weight.float(), None if bias is None else bias.float())
            fbias = getattr(self.model, "final_logits_bias", None)  # BART family
            if isinstance(fbias, torch.Tensor):
                logits = logits + fbias.float().view(-1)[: logits.shape[-1]]
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits

    @staticmethod
    def _append_tokens(nxt: torch.Tensor, stop: set[int], generated: list[list[int]], done: list[bool]) -> bool:
        """Greedy decoding bookkeeping: append each unfinished row's next token, or finish the row on a stop
        token. True when every row is done."""
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop:
                    done[i] = True
                else:
                    generated[i].append(t)
        return all(done)

    def _decode(self, generated: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None),
                                                          "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(x) for x in src)
        return ids
