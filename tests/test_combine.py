"""Combining task prompt vectors: weighted sums, TIES, DARE, the registry, lambda and weight searches."""

import math

import pytest
import torch

from tpv_core import combine
from tpv_core.combine import (MERGE_METHODS, combine_prompt, dare_merge, lambda_search, ties_merge, weighted_sum,
                              weights_search)
from tpv_core.prompts import PromptMismatchError, SoftPrompt, TaskPromptVector, make_origin


@pytest.fixture(scope="module")
def prompts():
    gen = torch.Generator().manual_seed(7)
    emb = torch.randn(6000, 16, generator=gen)
    origin = make_origin(embeddings=emb, backbone_name="toy", seed=0, length=4)
    return [SoftPrompt(origin.tensor + 0.1 * torch.randn(4, 16, generator=gen), origin, t, "toy")
            for t in ("mnli", "qnli", "sst2")]


def vec(values, task="t", backbone="toy"):
    return TaskPromptVector(torch.tensor([values], dtype=torch.float32), backbone, ((task, 1.0),), ("o",))


# ------------------------------------------------------------------------------------------ sums
def test_one_hot_weights_reproduce_a_prompt(prompts):
    vectors = [p.vector() for p in prompts]
    origin = prompts[0].origin
    for i, p in enumerate(prompts):
        weights = [1.0 if j == i else 0.0 for j in range(len(prompts))]
        assert torch.allclose(combine_prompt(vectors, weights, origin), p.tensor, atol=1e-6)
    tau = weighted_sum(vectors, [0.5, 0.25, 0.0])
    assert torch.allclose(tau.tensor, 0.5 * vectors[0].tensor + 0.25 * vectors[1].tensor)
    assert tau.label == "0.5*mnli + 0.25*qnli + 0*sst2"
    assert torch.allclose(combine_prompt(vectors, None, origin, coef=0.5),
                          origin.tensor + 0.5 * sum(v.tensor for v in vectors), atol=1e-6)


def test_weighted_sum_errors(prompts):
    vectors = [p.vector() for p in prompts]
    with pytest.raises(ValueError, match="2 weights for 3 vectors"):
        weighted_sum(vectors, [1.0, 1.0])
    with pytest.raises(ValueError, match="at least one"):
        weighted_sum([])
    with pytest.raises(PromptMismatchError, match="backbones"):
        weighted_sum([vectors[0], TaskPromptVector(torch.zeros(4, 16), "other", (("x", 1.0),))])
    for name in ("ties", "dare"):
        with pytest.raises(PromptMismatchError, match="shapes"):
            MERGE_METHODS[name]([vec([1.0, 2.0]), vec([1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="unknown merge method"):
        combine.merge("avg", vectors)


def test_registry_has_one_signature(prompts):
    vectors = [p.vector() for p in prompts]
    assert set(MERGE_METHODS) == {"sum", "ties", "dare"}
    for name, fn in MERGE_METHODS.items():
        tau = fn(vectors, [1.0, 0.5, 0.0])
        assert isinstance(tau, TaskPromptVector) and tau.shape == (4, 16)
        assert tau.tasks == ("mnli", "qnli", "sst2")  # the terms labels survive every method
        assert dict(tau.terms)["qnli"] == 0.5
        assert tau.origin_ids == (prompts[0].origin.id,)
        assert tau.apply_to(prompts[0].origin).shape == (4, 16)
    assert ties_merge(vectors).method_label.startswith("ties(density=0.2")


# ------------------------------------------------------------------------------------------ TIES
def test_ties_identical_vectors_density_one_gives_the_vector(prompts):
    v = prompts[0].vector()
    assert torch.allclose(ties_merge([v, v, v], density=1.0).tensor, v.tensor)


def test_ties_trim_elect_disjoint_mean():
    a, b = vec([2.0, -1.0, 0.5, 1.0]), vec([-1.0, -3.0, 0.5, 1.0])
    # elected signs (sum): +, -, +, + ; entry 0 keeps only a, entry 1 both (-1, -3) -> -2
    assert ties_merge([a, b], density=1.0).tensor.tolist() == [[2.0, -2.0, 0.5, 1.0]]
    assert ties_merge([a, b], density=1.0, normalize=False).tensor.tolist() == [[2.0, -4.0, 1.0, 2.0]]
    # density 0.5 keeps the two largest magnitudes of each vector: a -> [2, -1, 0, 0] (tie at 1: one kept)
    single = ties_merge([vec([4.0, -3.0, 0.5, 0.1])], density=0.5).tensor
    assert single.tolist() == [[4.0, -3.0, 0.0, 0.0]]
    # a zero weight removes a vector
    assert ties_merge([a, b], [1.0, 0.0], density=1.0).tensor.tolist() == a.tensor.tolist()
    with pytest.raises(ValueError, match="density"):
        ties_merge([a], density=0.0)


# ------------------------------------------------------------------------------------------ DARE
def test_dare_drop_zero_is_the_plain_sum(prompts):
    vectors = [p.vector() for p in prompts]
    weights = [1.0, -0.5, 2.0]
    assert torch.allclose(dare_merge(vectors, weights, drop=0.0).tensor, weighted_sum(vectors, weights).tensor)


def test_dare_deterministic_and_rescaled():
    big = TaskPromptVector(torch.ones(50, 40), "toy", (("t", 1.0),))
    a = dare_merge([big, big], drop=0.9, seed=3)
    b = dare_merge([big, big], drop=0.9, seed=3)
    c = dare_merge([big, big], drop=0.9, seed=4)
    assert torch.equal(a.tensor, b.tensor) and not torch.equal(a.tensor, c.tensor)
    single = dare_merge([big], drop=0.9, seed=0).tensor
    kept = (single != 0).float().mean().item()
    assert 0.05 < kept < 0.15  # ~10% survive
    assert torch.allclose(single[single != 0], torch.tensor(10.0))  # survivors rescaled by 1 / (1 - drop)
    assert single.mean().item() == pytest.approx(1.0, abs=0.2)  # expectation preserved
    with pytest.raises(ValueError, match="drop"):
        dare_merge([big], drop=1.0)


# ------------------------------------------------------------------------------------------ searches
def test_lambda_search_finds_the_peak():
    best, table = lambda_search(lambda lam: -(lam - 0.35) ** 2)
    assert best == pytest.approx(0.35)
    assert len(table) == 21 and table["lambda"].iloc[0] == 0.0 and table["lambda"].iloc[-1] == 1.0
    assert table.loc[table["best"], "lambda"].tolist() == [pytest.approx(0.35)]
    # ties go to the smallest lambda; NaN never wins
    best_tie, _ = lambda_search(lambda lam: 1.0 if lam >= 0.5 else 0.0)
    assert best_tie == 0.5
    best_nan, _ = lambda_search(lambda lam: math.nan if lam > 0.2 else lam, grid=[0.1, 0.2, 0.9])
    assert best_nan == 0.2
    with pytest.raises(ValueError, match="NaN"):
        lambda_search(lambda lam: math.nan, grid=[0.5])


def test_weights_search_coordinate_improves_within_budget():
    target = [0.3, 0.7, 0.1]
    calls = []

    def score(w):
        calls.append(list(w))
        return -sum((a - b) ** 2 for a, b in zip(w, target))

    best, table = weights_search(score, 3, budget=50)
    assert best == pytest.approx(target)
    assert len(calls) == len(table) <= 50
    assert table["score"].iloc[0] == pytest.approx(score([1.0, 1.0, 1.0]))  # starts at the plain sum
    assert table["best_so_far"].is_monotonic_increasing
    calls.clear()
    best5, table5 = weights_search(score, 3, budget=5)
    assert len(calls) == 5 == len(table5)
    assert score(best5) > score([1.0, 1.0, 1.0])


def test_weights_search_grid():
    best, table = weights_search(lambda w: -abs(w[0] - 0.5) - abs(w[1]), 2, grid=[0.0, 0.5, 1.0], budget=9,
                                 method="grid")
    assert best == [0.5, 0.0] and len(table) == 9
    with pytest.raises(ValueError, match="budget"):
        weights_search(lambda w: 0.0, 3, grid=[0.0, 0.5, 1.0], budget=20, method="grid")
    with pytest.raises(ValueError, match="coordinate"):
        weights_search(lambda w: 0.0, 2, method="random")
