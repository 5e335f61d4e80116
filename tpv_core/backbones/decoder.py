"""Decoder-only (causal LM: LLaMA / SmolLM2, GPT-style) backbones.

Sequence per row: prompt (L soft tokens) | input tokens | answer tokens, right-padded, with
position ids equal to the column index for every real token (so the prompt sits at positions
0..L-1 exactly as in PEFT prompt tuning).

Rank classification scores every label in ONE forward pass per batch, exactly also for multi-token
verbalisers: each label's answer tokens (all but the last, which is only predicted) are appended
after the input as a separate branch; a 4-D attention mask lets each branch see the prompt, the input
and its own earlier tokens only, and each branch's positions restart after the input. Logits are
computed only at the positions that predict an answer token (hidden states gathered before the LM
head), never over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tpv_core.backbones.base import Backbone, InputBatch, LabelSet


class DecoderBackbone(Backbone):
    family = "decoder"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        tok = self.tokenizer
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self._adds_bos = tok.bos_token_id is not None and len(probe) > 0 and probe[0] == tok.bos_token_id
        self._chat_suffix: list[int] = []
        if self.has_chat_template:
            try:
                msgs = [{"role": "user", "content": "X"}]
                with_gen = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                without = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
                if with_gen.startswith(without) and len(with_gen) > len(without):
                    self._chat_suffix = tok(with_gen[len(without):], add_special_tokens=False)["input_ids"]
            except Exception:  # a template that needs more than one user turn: no detection
                self._chat_suffix = []

    @property
    def base(self) -> torch.nn.Module:
        """The transformer stack without the LM head (returns hidden states)."""
        return self.model.base_model

    # ---- tokenization ------------------------------------------------------------------
    def tokenize(self, texts, chat: bool = False) -> list[list[int]]:
        if isinstance(texts, str):
            texts = [texts]
        if not (chat and self.has_chat_template):
            return super().tokenize(texts)
        rendered = [
            self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True)
            for t in texts
        ]
        return [list(x) for x in self.tokenizer(rendered, add_special_tokens=False)["input_ids"]]

    def _chat_ok(self) -> bool:
        return self.has_chat_template

    def _is_chat(self, ids: list[list[int]]) -> bool:
        s = self._chat_suffix
        return bool(s) and all(len(r) >= len(s) and r[-len(s):] == s for r in ids)

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        # keep the END (the answer follows it); keep a BOS the tokenizer put first
        if self._adds_bos and ids and ids[0] == self.tokenizer.bos_token_id and max_length > 1:
            return [ids[0]] + ids[len(ids) - (max_length - 1):]
        return ids[len(ids) - max_length:]

    def answer_tokens(self, labels: LabelSet, chat: bool = False) -> list[list[int]]:
        """Token ids of each verbaliser as it follows the input: " "+word, or the word right after the
        chat assistant header."""

        def make() -> list[list[int]]:
            out = []
            for w in labels.words:
                ids = self.tokenizer(w if chat else " " + w, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ValueError(f"verbaliser {w!r} tokenizes to nothing on backbone {self.name!r}")
                out.append(list(ids))
            return out

        return self._cached(("answers", labels.words, bool(chat)), make)

    # ---- embedding -----------------------------------------------------------------------
    # ---- the one forward pass ---------------------------------------------------------------
    def answer_logprobs(self, batch: InputBatch, prompt: torch.Tensor | None,
                        answers: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of answer tokens given prompt | input, one forward pass.

        ``answers[i]`` lists the candidate answers (token id lists) of row i. Returns
        (logp (N,) float32, owner (N,) long) over all answer tokens, where owner indexes the flattened
        (row, answer) pairs in order.
        """
        prompt = self.check_prompt(prompt)
        L = self.prompt_length(prompt)
        rows = batch.rows()
        if len(answers) != len(rows):
            raise ValueError(f"{len(answers)} answer lists for a batch of {len(rows)} rows")
        ext_rows, seg_rows, pos_rows = [], [], []
        g_row, g_col, g_tok, g_owner = [], [], [], []
        owner = 0
        multi = False
        for i, (row, cands) in enumerate(zip(rows, answers)):
            n = len(row)
            if L + n == 0:
                raise ValueError(f"row {i} of the batch is empty and there is no prompt: nothing to condition on")
            ext, seg, pos = list(row), [0] * n, [L + j for j in range(n)]
            if sum(1 for a in cands if len(a) > 1) > 1:
                multi = True
            for c, ans in enumerate(cands):
                if not ans:
                    raise ValueError(f"empty answer for row {i}")
                prev = L + n - 1  # column whose output predicts the next answer token
                for j, tok in enumerate(ans):
                    g_row.append(i)
                    g_col.append(prev)
                    g_tok.append(tok)
                    g_owner.append(owner)
                    if j < len(ans) - 1:  # the last token is only predicted, never fed
                        ext.append(tok)
                        seg.append(c + 1)
                        pos.append(L + n + j)
                        prev = L + len(ext) - 1
                owner += 1
            ext_rows.append(ext)
            seg_rows.append(seg)
            pos_rows.append(pos)

        B, S = len(rows), max(1, max(len(e) for e in ext_rows))
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        seg = torch.full((B, L + S), -1, dtype=torch.long)
        pos = torch.zeros((B, L + S), dtype=torch.long)
        seg[:, :L] = 0
        pos[:, :L] = torch.arange(L)
        for i, (e, s, p) in enumerate(zip(ext_rows, seg_rows, pos_rows)):
            if e:
                ids[i, : len(e)] = torch.tensor(e)
                seg[i, L: L + len(e)] = torch.tensor(s)
                pos[i, L: L + len(e)] = torch.tensor(p)
        # built on the host, copied without blocking (no device-to-host read anywhere in this pass)
        ids, seg, pos = self._to_device(ids), self._to_device(seg), self._to_device(pos)
        g_row, g_col, g_tok, g_owner = (self._to_device(torch.tensor(x, dtype=torch.long))
                                        for x in (g_row, g_col, g_tok, g_owner))
        valid = seg >= 0
        emb = self.word_embed(ids)
        if L:
            emb = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), emb], dim=1)
        if multi or self.device.type != "cpu":
            # our own 4-D mask; on accelerators always, because given a 2-D mask Hugging Face reads the padding
            # mask back to the host to decide whether it may skip it (a device sync in every forward pass)
            mask = self._branch_mask(seg, valid)
        else:  # one branch per row: the plain causal mask over the real tokens is exact
            mask = valid.long()
        with self._autocast():
            out = self.base(inputs_embeds=self.model_input(emb), attention_mask=mask, position_ids=pos,
                            use_cache=False)
        hidden = out[0]
        sel = hidden[g_row, g_col]
        logp = F.log_softmax(self._lm_logits(sel), dim=-1)
        return logp.gather(1, g_tok[:, None]).squeeze(1), g_owner

    def _branch_mask(self, seg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """4-D mask (B, 1, Q, Q): causal, real keys only, and a branch sees the shared prefix (segment 0)
        and itself only. The diagonal is always open so no query row is fully masked."""
        Q = seg.shape[1]
        ar = torch.arange(Q, device=seg.device)
        causal = ar[None, :] <= ar[:, None]  # [q, k]: k <= q
        same = (seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == 0)
        allowed = causal[None] & same & valid[:, None, :]
        allowed |= torch.eye(Q, dtype=torch.bool, device=seg.device)[None]
        return self.attention_mask_4d(allowed[:, None])

    def features(self, batch: InputBatch, prompt: torch.Tensor | None = None) -> torch.Tensor:
        emb, mask = self.embed(batch, prompt)  # prompt first, rows right-padded
        B, Q = mask.shape
        pos = torch.arange(Q, device=self.device).expand(B, -1)
        with self._autocast():
            hidden = self.base(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False)[0]
        last = (mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(B, device=self.device), last].float()

    # ---- the interface ---------------------------------------------------------------------
    def label_scores(self, batch: InputBatch, prompt: torch.Tensor | None, labels: LabelSet) -> torch.Tensor:
        ans = self.answer_tokens(labels, batch.chat)
        B, C = len(batch), len(ans)
        logp, owner = self.answer_logprobs(batch, prompt, [ans] * B)
        scores = torch.zeros(B * C, dtype=torch.float32, device=self.device).index_add(0, owner, logp)
        return scores.view(B, C)

    def loss_terms(self, batch: InputBatch, prompt: torch.Tensor, labels: LabelSet,
                   targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        targets = self._check_targets(targets, batch, labels)  # on the host: tolist() is free
        ans = self.answer_tokens(labels, batch.chat)
        chosen = [ans[t] for t in targets.tolist()]
        logp, _ = self.answer_logprobs(batch, prompt, [[a] for a in chosen])
        return -logp.sum(), sum(len(a) for a in chosen)  # token-level cross-entropy over answer tokens

    @torch.no_grad()
    def generate(self, batch: InputBatch, prompt: torch.Tensor | None, max_new_tokens: int = 8) -> list[str]:
        """Greedy decoding after prompt | input (KV cache; rows continue at their own positions)."""
        emb, mask = self.embed(batch, prompt)
        B, Q = mask.shape
        L = Q - batch.input_ids.shape[1]
        dev = self.device
        pos = torch.arange(Q, device=dev).expand(B, -1)
        ends = L + batch.lengths  # next position per row
        if int(ends.min()) == 0:
            raise ValueError("cannot generate from an empty row without a prompt")
        stop = self._stop_ids()
        generated: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        with self._autocast():
            out = self.base(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = out.past_key_values
        h = out[0][torch.arange(B, device=dev), ends - 1]
        for step in range(max_new_tokens):
            nxt = self._lm_logits(h).argmax(-1)
            if self._append_tokens(nxt, stop, generated, done) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
            with self._autocast():
                out = self.base(inputs_embeds=self.model_input(self.word_embed(nxt[:, None])), attention_mask=mask,
                                position_ids=(ends + step)[:, None], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            h = out[0][:, -1]
        return self._decode(generated)
