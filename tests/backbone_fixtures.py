"""Test-only backbones and module-scoped backbone fixtures (imported by test_backbones.py).

Importing this module registers two small randomly initialised models as providers (conftest.py imports it,
so every test can ``load_backbone("test-tiny-t5")``): ``test-tiny-t5`` (d=64, 2+2 layers, a byte-level BPE
tokenizer trained here on a fixed word list) and ``test-tiny-llama`` (d=64, 2 layers, SmolLM2's tokenizer).
They live with the tests, not in ``tpv_core``: no user needs them.

The fixtures load each model once per module; all use the real cache dir, so the converted SmolLM2 copy
is reused across runs.
"""

import pytest
import torch

from tpv_core.backbones import registry
from tpv_core.backbones.fetch import smollm2_available, smollm2_tokenizer
from tpv_core.paths import cache_dir

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


def tiny_t5_tokenizer():
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


def _tiny_t5(notify):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny_t5_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                   num_heads=4, relative_attention_num_buckets=32, dropout_rate=0.0, feed_forward_proj="relu",
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
    return tok, lambda: T5ForConditionalGeneration(cfg)


def _tiny_llama(notify):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer(notify)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, initializer_range=0.2,  # peaky enough to notice position bugs
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return tok, lambda: LlamaForCausalLM(cfg)


def _random_loader(build, seed: int = 0):
    def load(p: registry.Provider, req: registry.LoadRequest):
        tok, make = build(req.notify)
        with torch.random.fork_rng(devices=[]):  # deterministic, and the caller's RNG stream is left alone
            torch.manual_seed(seed)
            model = make()
        return registry.FAMILY_CLASSES[p.family](name=p.name, model_id=p.model_id, revision=f"random-init:seed{seed}",
                                                 model=model.to(req.weights), tokenizer=tok, device=req.device,
                                                 compute_dtype=req.dtype)

    return load


TINY_T5 = registry.ProviderKind(load=_random_loader(_tiny_t5), offline=lambda p: True)
TINY_LLAMA = registry.ProviderKind(
    load=_random_loader(_tiny_llama),
    offline=lambda p: smollm2_available() or (cache_dir() / "tokenizers" / "smollm2-135m").is_dir())

registry.register_provider(registry.Provider(
    "test-tiny-t5", "seq2seq", "random/tiny-t5", TINY_T5,
    "random T5 (d=64, 2+2 layers, local byte-level BPE tokenizer), for tests only", for_tests=True))
registry.register_provider(registry.Provider(
    "test-tiny-llama", "decoder", "random/tiny-llama", TINY_LLAMA,
    "random LLaMA (d=64, 2 layers, SmolLM2 tokenizer), for tests only", for_tests=True))

FAMILY_MODELS = ["test-tiny-t5", "test-tiny-llama", "minilm-l6", "smollm2-135m"]


def _load(name: str, precision: str = "fp32"):
    from tpv_core.backbones import load_backbone

    return load_backbone(name, device="cpu", precision=precision)


@pytest.fixture(scope="module")
def tiny_t5():
    return _load("test-tiny-t5")


@pytest.fixture(scope="module")
def tiny_llama():
    return _load("test-tiny-llama")


@pytest.fixture(scope="module")
def minilm_l6():
    return _load("minilm-l6")


@pytest.fixture(scope="module")
def smollm2():
    return _load("smollm2-135m")


@pytest.fixture(scope="module", params=FAMILY_MODELS)
def fp32_backbone(request):
    """Each family's model in fp32 (the fixtures above, so nothing loads twice)."""
    fixture = {"test-tiny-t5": "tiny_t5", "test-tiny-llama": "tiny_llama", "minilm-l6": "minilm_l6",
               "smollm2-135m": "smollm2"}[request.param]
    return request.getfixturevalue(fixture)
