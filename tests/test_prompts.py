import pytest
import torch

from tpv_core.prompts import PromptMismatchError, SoftPrompt, TaskPromptVector, make_origin

EMB = torch.randn(6000, 16, generator=torch.Generator().manual_seed(0))


def origin(seed=0, kind="vocab", length=5, backbone="toy"):
    return make_origin(embeddings=EMB, backbone_name=backbone, kind=kind, seed=seed, length=length)


def prompt(task, seed=0, shift=1.0, backbone="toy"):
    o = origin(seed, backbone=backbone)
    g = torch.Generator().manual_seed(hash(task) % 1000)
    return SoftPrompt(o.tensor + shift * torch.randn(o.tensor.shape, generator=g), o, task, backbone)


def test_origin_deterministic_and_order_independent():
    a1 = origin(3)
    _ = [origin(s) for s in range(10)]  # making other origins first must not change seed 3
    a2 = origin(3)
    assert torch.equal(a1.tensor, a2.tensor)
    assert not torch.equal(origin(3).tensor, origin(4).tensor)
    assert a1 == a2 and a1.id == "vocab5000-s3-L5"


def test_vocab_origin_rows_are_distinct_embeddings_from_first_ids():
    o = make_origin(embeddings=EMB, backbone_name="toy", seed=1, length=50, vocab_limit=100)
    rows = {tuple(r.tolist()) for r in o.tensor}
    assert len(rows) == 50
    first = {tuple(r.tolist()) for r in EMB[:100]}
    assert rows <= first


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_random_origins(kind):
    o = origin(2, kind=kind)
    assert o.tensor.shape == (5, 16) and torch.equal(o.tensor, origin(2, kind=kind).tensor)
    if kind == "uniform":
        assert o.tensor.abs().max() <= 0.5


def test_origin_errors():
    with pytest.raises(ValueError, match="unknown origin kind"):
        origin(kind="zeros")
    with pytest.raises(ValueError, match="distinct tokens"):
        make_origin(embeddings=EMB[:10], backbone_name="toy", length=20)


def test_arithmetic_invariants():
    p, q, r = prompt("a"), prompt("b"), prompt("c")
    ta, tb, tc = p.vector(), q.vector(), r.vector()
    assert torch.allclose(ta.apply_to(p.origin), p.tensor, atol=1e-6)  # P0 + (P - P0) == P
    assert torch.allclose((ta + tb).tensor, (tb + ta).tensor)
    assert torch.allclose(((ta + tb) + tc).tensor, (ta + (tb + tc)).tensor, atol=1e-6)
    assert torch.equal(ta.apply_to(p.origin, coef=0.0), p.origin.tensor)
    assert torch.equal((-(-ta)).tensor, ta.tensor) and (-(-ta)).terms == ta.terms
    assert torch.equal(TaskPromptVector.sum([ta]).tensor, ta.tensor)
    assert torch.allclose((ta - tb).tensor, (ta + (-1) * tb).tensor)
    assert torch.allclose(sum([ta, tb, tc]).tensor, TaskPromptVector.sum([ta, tb, tc]).tensor)
    w = TaskPromptVector.sum([ta, tb], weights=[0.5, -2])
    assert torch.allclose(w.tensor, 0.5 * ta.tensor - 2 * tb.tensor)


def test_vector_remembers_terms():
    ta, tb = prompt("mnli").vector(), prompt("sst2").vector()
    v = 0.5 * ta - tb
    assert v.terms == (("mnli", 0.5), ("sst2", -1.0))
    assert v.label == "0.5*mnli - sst2"
    assert (ta + ta).terms == (("mnli", 2.0),)


def test_mismatches_name_both_sides():
    ta = prompt("a").vector()
    other_bb = prompt("b", backbone="other").vector()
    with pytest.raises(PromptMismatchError, match="toy.*other"):
        ta + other_bb
    wide = TaskPromptVector(torch.zeros(5, 8), "toy", (("w", 1.0),))
    with pytest.raises(PromptMismatchError, match=r"\(5, 16\).*\(5, 8\)"):
        ta + wide
    with pytest.raises(PromptMismatchError, match="origin"):
        ta.apply_to(origin(0, length=7))
    with pytest.raises(PromptMismatchError, match="backbone"):
        ta.apply_to(origin(0, backbone="other"))
    with pytest.raises(ValueError, match="2-D"):
        TaskPromptVector(torch.zeros(3), "toy", ())


def test_soft_prompt_checks_origin():
    o = origin()
    with pytest.raises(PromptMismatchError):
        SoftPrompt(torch.zeros(6, 16), o, "t", "toy")
    with pytest.raises(PromptMismatchError):
        SoftPrompt(torch.zeros(5, 16), o, "t", "other")
