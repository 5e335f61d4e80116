"""Encoder-decoder (T5 family) backbones.

Encoder input: prompt (all L soft tokens) | input tokens (+ EOS). Decoder labels: the verbaliser's
tokens + EOS. Rank classification runs the encoder once per batch and the decoder once over the
B x C (row, label) pairs with the encoder output repeated over labels (teacher forcing); logits only
at the real answer positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tpv_core.backbones.base import Backbone, InputBatch, LabelSet, masked_mean


class Seq2SeqBackbone(Backbone):
    family = "seq2seq"

    @property
    def decoder_start_id(self) -> int:
        sid = getattr(self.model.config, "decoder_start_token_id", None)
        return int(sid) if sid is not None else self.pad_id

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        eos = self.tokenizer.eos_token_id
        if eos is not None and ids and ids[-1] == eos and max_length > 1:
            return ids[: max_length - 1] + [eos]
        return ids[:max_length]

    def answer_tokens(self, labels: LabelSet) -> list[list[int]]:
        """Decoder labels of each verbaliser: its tokens followed by EOS."""

        def make() -> list[list[int]]:
            out = []
            eos = self.tokenizer.eos_token_id
            for w in labels.words:
                ids = list(self.tokenizer(w, add_special_tokens=False)["input_ids"])
                if not ids:
                    raise ValueError(f"verbaliser {w!r} tokenizes to nothing on backbone {self.name!r}")
                out.append(ids + ([eos] if eos is not None else []))
            return out

        return self._cached(("answers", labels.words), make)

    def encode(self, batch: InputBatch, prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder hidden states (B, L+T, d) of prompt | input, and their mask."""
        emb, mask = self.embed(batch, prompt)
        with self._autocast():
            enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=self._keys_mask(mask))[0]
        return enc, mask

    def _keys_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The (B, K) key mask as passed to the model: itself on CPU; on accelerators the 4-D (B, 1, 1, K) form,
        which Hugging Face does not read back to the host (`attention_mask_4d`)."""
        if self.device.type == "cpu":
            return mask
        return self.attention_mask_4d(mask[:, None, None, :].bool())

    def features(self, batch: InputBatch, prompt: torch.Tensor | None = None) -> torch.Tensor:
        enc, mask = self.encode(batch, prompt)
        return masked_mean(enc, mask)

    def answer_logprobs(self, enc: torch.Tensor, enc_mask: torch.Tensor, row_index: torch.Tensor,
                        answers: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Teacher-forced log-likelihood of each answer (sum over its tokens): (N,) for N answers, answer k
        scored against encoder row ``row_index[k]``; and the number of answer tokens."""
        dev = self.device
        N, K = len(answers), max(len(a) for a in answers)
        labels = torch.full((N, K), -100, dtype=torch.long)
        for k, a in enumerate(answers):
            labels[k, : len(a)] = torch.tensor(a)
        # everything indexed by the answer layout is built on the host (boolean-mask indexing on the device
        # would read the mask back: a sync per step)
        real = labels >= 0
        dec_in = torch.full((N, K), self.pad_id, dtype=torch.long)
        dec_in[:, 0] = self.decoder_start_id
        dec_in[:, 1:] = labels[:, :-1].clamp(min=0)
        dec_in = torch.where(dec_in < 0, torch.full_like(dec_in, self.pad_id), dec_in)
        rb, rk = real.nonzero(as_tuple=True)
        tok = labels[rb, rk]
        n_tokens = int(rb.numel())
        dec_in, real_d, rb, rk, tok = (self._to_device(t) for t in (dec_in, real.long(), rb, rk, tok))
        self_mask = real_d
        if self.device.type != "cpu":  # causal over the real answer tokens, as a 4-D mask (no host read-back)
            causal = torch.ones(K, K, dtype=torch.bool, device=dev).tril()
            self_mask = self.attention_mask_4d(causal[None, None] & real_d.bool()[:, None, None, :])
        with self._autocast():
            hidden = self.model.get_decoder()(
                input_ids=dec_in, attention_mask=self_mask, encoder_hidden_states=enc[row_index],
                encoder_attention_mask=self._keys_mask(enc_mask[row_index]), use_cache=False,
            )[0]
        sel = hidden[rb, rk]
        logp = F.log_softmax(self._lm_logits(sel), dim=-1).gather(1, tok[:, None]).squeeze(1)
        return torch.zeros(N, dtype=torch.float32, device=dev).index_add(0, rb, logp), n_tokens

    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        ans = self.answer_tokens(labels)
        B, C = len(batch), len(ans)
        enc, mask = self.encode(batch, prompt)
        rows = torch.arange(B, device=self.device).repeat_interleave(C)
        scores, _ = self.answer_logprobs(enc, mask, rows, ans * B)
        return scores.view(B, C)

    def loss_terms(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet,
                   targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        targets = self._check_targets(targets, batch, labels)
        ans = self.answer_tokens(labels)
        enc, mask = self.encode(batch, prompt)
        total, n_tokens = self.answer_logprobs(enc, mask, torch.arange(len(batch), device=self.device),
                                               [ans[t] for t in targets.tolist()])
        return -total.sum(), n_tokens  # token-level cross-entropy over answer tokens (EOS included)

    @torch.no_grad()
    def generate(self, batch: InputBatch, prompt: torch.Tensor | None, max_new_tokens: int = 8) -> list[str]:
        """Greedy decoding from prompt | input on the encoder (the decoder re-run per step: answers are short)."""
        enc, mask = self.encode(batch, prompt)
        B, dev = len(batch), self.device
        stop = self._stop_ids()
        dec = torch.full((B, 1), self.decoder_start_id, dtype=torch.long, device=dev)
        generated: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        for _ in range(max_new_tokens):
            with self._autocast():
                h = self.model.get_decoder()(input_ids=dec, encoder_hidden_states=enc,
                                             encoder_attention_mask=self._keys_mask(mask), use_cache=False)[0][:, -1]
            nxt = self._lm_logits(h).argmax(-1)
            if self._append_tokens(nxt, stop, generated, done):
                break
            dec = torch.cat([dec, nxt[:, None]], dim=1)
        return self._decode(generated)
