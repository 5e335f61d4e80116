"""The backbone interface: one frozen language model, soft prompts passed per call.

A backbone tokenizes and pads task inputs, prepends a soft prompt P (L x d) to their embeddings,
scores a task's label set (rank classification), computes the prompt-tuning loss and, for the
generative families, generates. The model is frozen and read-only after load so that several
threads (app sessions, evaluation workers) can share one backbone; nothing about a call is kept on
``self`` except caches keyed by a label set, guarded by a lock.

Longer than 350 lines because the run options every family shares on a GPU (weights' dtype, the forward-pass
gate with out-of-memory advice, gradient checkpointing, compile) sit on the interface next to what they wrap.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch

from tpv_core.backbones import attention
from tpv_core.backbones.head import fp32_linear
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
    host_rows: list[list[int]] | None = field(default=None, repr=False)  # the rows as collated, kept on the host

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self) -> list[list[int]]:
        """The real (unpadded) token ids of each row (from the host copy when there is one: reading them
        back from a GPU would stall the step on a device-to-host copy)."""
        if self.host_rows is not None:
            return [list(r) for r in self.host_rows]
        ids = self.input_ids.tolist()
        return [r[:n] for r, n in zip(ids, self.lengths.tolist())]


@contextlib.contextmanager
def _slot(backbone: "Backbone", what: str):
    from tpv_core.device import oom_guard

    with backbone.forward_gate(), oom_guard(backbone.device, what):
        yield


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
        # the dtype the frozen weights are stored in (bf16 / fp16 straight onto a GPU, fp32 on CPU); the soft
        # prompt and its optimizer state stay fp32 whatever this is
        self.weight_dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        if self.device.type == "cpu" and compute_dtype == torch.bfloat16:
            attention.use_for(self.model)  # eager for training steps, SDPA for long inputs without gradients
        emb = self.model.get_input_embeddings()
        self.vocab_size = int(emb.weight.shape[0])
        self.dim = int(emb.weight.shape[1])
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.gradient_checkpointing = False
        self.compiled: str | None = None  # the torch.compile backend, when the layers are compiled
        # entered around every training step and evaluation batch: a no-op, unless an owner (the app's model
        # cache) installs a limit on concurrent forward passes per device; see `forward_slot`
        self.forward_gate: Callable[[], Any] = contextlib.nullcontext
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

    # ---- run options (set once, before training; the model stays frozen and in eval mode) ----------------
    def _layers(self) -> list[torch.nn.Module]:
        """The repeated transformer blocks (Hugging Face's checkpointable layers)."""
        try:
            from transformers.modeling_layers import GradientCheckpointingLayer
        except ImportError:  # pragma: no cover - older transformers
            return []
        return [m for m in self.model.modules() if isinstance(m, GradientCheckpointingLayer)]

    def enable_gradient_checkpointing(self) -> int:
        """Recompute each transformer block's activations in the backward pass instead of keeping them: the
        activation memory of a step drops from every block's to about one block's, for ~1/3 more compute.

        Hugging Face checkpoints only in ``train()`` mode, which would also switch dropout on; the frozen model
        stays in ``eval()`` here (dropout 0, as in every run of this library, so checkpointing changes no
        number) and each block's ``forward`` is wrapped in a non-reentrant checkpoint while gradients are
        enabled. (The paper's runs, HF Trainer on T5-base, train in ``train()`` mode: T5's dropout 0.1 on.)
        Returns the number of blocks wrapped."""
        from torch.utils.checkpoint import checkpoint

        layers = self._layers()
        if not layers:
            raise ValueError(f"{self.name}: no transformer blocks found to checkpoint (needs a Hugging Face model "
                             "whose layers derive from GradientCheckpointingLayer)")
        for layer in layers:
            if getattr(layer, "_tpv_checkpointed", False):
                continue
            inner = layer.forward

            def forward(*args, __inner=inner, **kwargs):
                if torch.is_grad_enabled():
                    return checkpoint(__inner, *args, use_reentrant=False, **kwargs)
                return __inner(*args, **kwargs)

            layer.forward = forward
            layer._tpv_checkpointed = True
        self.gradient_checkpointing = True
        return len(layers)

    def compile(self, backend: str = "inductor", dynamic: bool = True) -> int:
        """``torch.compile`` each transformer block in place (regional compilation: one small graph reused by
        every block, so compiling takes seconds, not minutes; ``dynamic`` because batches are padded to their
        own lengths). Returns the number of blocks compiled."""
        layers = self._layers()
        if not layers:
            raise ValueError(f"{self.name}: no transformer blocks found to compile")
        for layer in layers:
            layer.compile(backend=backend, dynamic=dynamic)
        self.compiled = backend
        return len(layers)

    def forward_slot(self, what: str = "a forward pass"):
        """Context for one unit of device work (a training step, an evaluation batch): waits for the
        device's forward-pass gate, and turns out-of-memory into `DeviceMemoryError` with advice."""
        return _slot(self, what)

    def run_options(self) -> dict[str, Any]:
        """How the frozen model runs, recorded with every tuned prompt."""
        return {"gradient_checkpointing": self.gradient_checkpointing, "compiled": self.compiled,
                "dropout": 0.0 if not self.model.training else "model default"}

    # ---- common helpers ----------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, getattr(self.model.config, "pad_token_id", None), tok.eos_token_id, 0):
            if isinstance(cand, int):
                return cand
        return 0

    def input_embeddings(self) -> torch.Tensor:
        """The (V, d) input embedding matrix as a detached fp32 CPU tensor (a view when already fp32 on CPU).
        A copy of the whole table when the model is on a GPU or in bf16: prefer :meth:`input_embedding_rows`."""
        return self.model.get_input_embeddings().weight.detach().to("cpu", torch.float32)

    def input_embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the input embedding matrix as a detached fp32 CPU tensor (L, d): only those rows
        leave the device (a vocab origin needs 20 of 128k rows, not a 2.1 GB fp32 copy of the table)."""
        weight = self.model.get_input_embeddings().weight.detach()
        ids = torch.as_tensor(ids, dtype=torch.long).view(-1)
        return weight.index_select(0, ids.to(weight.device)).to("cpu", torch.float32)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor onto the backbone's device; on CUDA through pinned memory without blocking the host."""
        if self.device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

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
        """The targets as a validated (B,) long tensor ON THE HOST (training passes host targets, so the
        range check costs no device sync; move it with :meth:`_to_device` where the device needs it)."""
        targets = torch.as_tensor(targets).long().view(-1).cpu()
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
        return InputBatch(self._to_device(input_ids), self._to_device(mask), self._to_device(lengths), bool(chat),
                          host_rows=rows)

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
        """(inputs_embeds (B, L+T, d) in the weights' dtype (`model_input`), attention mask (B, L+T) long)
        with the prompt inserted at ``prompt_position``."""
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
        return self.model_input(emb), mask

    def attention_mask_4d(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean (B, 1, Q, K) "may attend" mask in the form the model's attention takes as given: bool for
        SDPA / flex attention, additive float for eager and `attention.NAME`. Hugging Face returns a 4-D mask
        as it is, where from a 2-D one it first reads the padding back to the host to see whether it can skip
        the mask (a device sync per forward pass), so the families pass 4-D masks on accelerators."""
        if getattr(self.model.config, "_attn_implementation", "sdpa") in ("sdpa", "flex_attention"):
            return allowed
        return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(torch.float32).min)

    def model_input(self, emb: torch.Tensor) -> torch.Tensor:
        """``inputs_embeds`` in the dtype the model's weights are held in: fp32 stays fp32 (CPU); with bf16 /
        fp16 weights (GPU) the fp32 prompt | input rows are cast once, differentiably (the prompt's gradient
        arrives in fp32), so every layer sees its own dtype, as in the model's own bf16 runs."""
        return emb if self.weight_dtype == torch.float32 else emb.to(self.weight_dtype)

    @abc.abstractmethod
    def features(self, batch: InputBatch, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) float32: the hidden state the family reads its answer from (encoder: the pooled output;
        decoder: the last input position, which predicts the label word; seq2seq: the mean encoder
        output). Used by `tpv_core.probe` to ask what a frozen backbone already separates."""

    @abc.abstractmethod
    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        """(B, C) float32 class scores (higher = more likely)."""

    @abc.abstractmethod
    def loss_terms(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet,
                   targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(sum of the per-item losses, number of items): answer tokens for the generative families, rows for
        the encoder. Data-parallel training divides the sum of the sums by the sum of the counts over ranks,
        the global token average, which the mean of per-rank means is not when ranks hold different token
        counts. The count is known on the host, so no device sync is needed."""

    def loss(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss (the mean over items of :meth:`loss_terms`), differentiable w.r.t. ``prompt`` only."""
        total, count = self.loss_terms(batch, prompt, labels, targets)
        return total / max(count, 1)

    def generate(self, batch: InputBatch, prompt: torch.Tensor | None, max_new_tokens: int = 8) -> list[str]:
        raise NotImplementedError(
            f"backbone {self.name!r} is a {self.family} model and cannot generate text; "
            "use rank classification (label_scores) instead"
        )

    # ---- shared by the generative families -------------------------------------------------
    def _lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits in float32 for gathered hidden states (N, d), outside autocast.

        The head is never copied whole: fp32 weights are used as they are; bf16/fp16 weights go through one
        matmul with an fp32 result on CUDA (``torch.mm(..., out_dtype=float32)``: fp32 accumulation and
        output, no 2.1 GB fp32 copy of a 128k-word head), and through vocabulary chunks elsewhere."""
        head = self.model.get_output_embeddings()
        # leave autocast (when one is on: devices without autocast support, e.g. lazy, cannot even name it off)
        off = (torch.autocast(device_type=self.device.type, enabled=False) if self.compute_dtype is not None
               else contextlib.nullcontext())
        with off:
            h = hidden.float()
            if getattr(self.model.config, "scale_decoder_outputs", False) and self.family == "seq2seq":
                h = h * (self.model.config.d_model ** -0.5)  # T5 with tied embeddings
            bias = getattr(head, "bias", None)
            logits = fp32_linear(h, head.weight, None if bias is None else bias.float())
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
