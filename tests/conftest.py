"""Shared test fixtures: offline environment, real MiniLM loaded once, a tiny trained store."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tpv_core  # noqa: E402,F401  (first, before torch: it sets OMP_WAIT_POLICY, see tpv_core/env.py)
import pytest  # noqa: E402

import backbone_fixtures  # noqa: E402,F401  (registers the test-only random models test-tiny-t5 / test-tiny-llama)


@pytest.fixture(scope="session")
def minilm():
    from tpv_core.backbones import load_backbone

    return load_backbone("minilm-l6", device="cpu")


@pytest.fixture(scope="session")
def minilm_fp32():
    from tpv_core.backbones import load_backbone

    return load_backbone("minilm-l6", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, minilm):
    """A store of real MiniLM prompts: 2 tasks x 2 origins, L=4, a few steps each."""
    from tpv_core.prompts import make_origin
    from tpv_core.store import PromptStore
    from tpv_core.tasks import get_task
    from tpv_core.training import TrainConfig, tune_prompt

    store = PromptStore(tmp_path_factory.mktemp("store"))
    cfg = TrainConfig(steps=6, batch_size=8, eval_every=3, eval_limit=16)
    for name in ("sentences_yelp", "sentences_imdb"):
        for seed in (0, 1):
            origin = make_origin(minilm, seed=seed, length=4)
            store.save(tune_prompt(minilm, get_task(name), origin, cfg).prompt)
    return store
