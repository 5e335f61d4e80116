"""Module-scoped backbone fixtures (imported by test_backbones.py): each model loads once per module.

All use the real cache dir, so the converted SmolLM2 copy is reused across runs.
"""

import pytest

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
