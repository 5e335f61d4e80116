"""Cosine similarity (flat and token-mean), tidy tables, task aggregation, cross-model geometry, `tpv similarity`."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tpv_core import similarity as sim
from tpv_core.prompts import PromptMismatchError, SoftPrompt
from synthetic import synthetic_prompts


# ------------------------------------------------------------------------------------------ cosine
@pytest.mark.parametrize("definition", ["flat", "token-mean"])
def test_self_similarity_is_one(definition):
    t = torch.randn(4, 16)
    assert sim.cosine(t, t, definition) == pytest.approx(1.0)
    assert sim.cosine(t, -t, definition) == pytest.approx(-1.0)
    assert sim.cosine(t, 3.0 * t, definition) == pytest.approx(1.0)


def test_hand_made_cases():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert sim.cosine(a, b, "flat") == pytest.approx(0.0)
    assert sim.cosine(a, b, "token-mean") == pytest.approx(0.0)
    # same rows in swapped positions: orthogonal when flattened, identical in the mean
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert sim.cosine(p, q, "flat") == pytest.approx(0.0)
    assert sim.cosine(p, q, "token-mean") == pytest.approx(1.0)
    # rows that cancel in the mean: token-mean is undefined (NaN), flat is fine
    c = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    assert sim.cosine(c, c, "flat") == pytest.approx(1.0)
    assert math.isnan(sim.cosine(c, c, "token-mean"))
    # a known angle: 60 degrees
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[0.5, math.sqrt(3) / 2]])
    assert sim.cosine(u, v, "flat") == pytest.approx(0.5)


def test_cosine_errors():
    with pytest.raises(ValueError, match="definition"):
        sim.cosine(torch.ones(2, 2), torch.ones(2, 2), "mean")  # type: ignore[arg-type]
    with pytest.raises(PromptMismatchError, match="widths"):
        sim.cosine(torch.ones(2, 4), torch.ones(2, 8), "token-mean")
    with pytest.raises(PromptMismatchError, match="shapes"):
        sim.cosine(torch.ones(2, 4), torch.ones(3, 4), "flat")
    # token-mean compares prompts of different lengths but equal width
    assert sim.cosine(torch.ones(2, 4), torch.ones(3, 4), "token-mean") == pytest.approx(1.0)


@pytest.mark.parametrize("definition", ["flat", "token-mean"])
def test_cosine_matrix_matches_pairwise(definition):
    ts = [torch.randn(3, 5, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    m = sim.cosine_matrix(ts, definition)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(np.diag(m), 1.0)
    np.testing.assert_allclose(m, m.T)
    assert m[1, 3] == pytest.approx(sim.cosine(ts[1], ts[3], definition))


# ------------------------------------------------------------------------------------------ tables
def test_collect_vectors_and_prompts():
    prompts = synthetic_prompts(seeds=(0,), tasks=("a",))
    (v,) = sim.collect(prompts, "vector")
    (p,) = sim.collect(prompts, "prompt")
    assert torch.allclose(v.tensor, prompts[0].tensor - prompts[0].origin.tensor)
    assert torch.equal(p.tensor, prompts[0].tensor)
    assert (v.backbone, v.task, v.origin, v.seed, v.what) == ("toy", "a", "vocab5000-s0-L4", 0, "vector")
    assert v.label == "a/vocab5000-s0-L4"
    with pytest.raises(ValueError):
        sim.collect(prompts, "tensor")  # type: ignore[arg-type]


def test_similarity_table_pairs_within_backbones_only():
    items = sim.collect(synthetic_prompts() + synthetic_prompts("wide", dim=24, base=1))
    table = sim.similarity_table(items, "flat")
    assert set(table["backbone"]) == {"toy", "wide"}
    assert len(table) == 2 * (9 * 8 // 2)  # unordered pairs of distinct items, per backbone
    for col in ["backbone", "task_a", "origin_a", "task_b", "origin_b", "same_origin", "definition", "cosine"]:
        assert col in table.columns
    assert (table["definition"] == "flat").all()
    both = sim.similarity_table(items, "both")
    assert len(both) == 2 * len(table)
    assert set(both["definition"]) == {"flat", "token-mean"}


def test_by_task_counts_and_same_origin_modes():
    table = sim.similarity_table(sim.collect(synthetic_prompts()), "flat")
    ex = sim.by_task(table, "exclude").set_index(["task_a", "task_b"])
    inc = sim.by_task(table, "include").set_index(["task_a", "task_b"])
    only = sim.by_task(table, "only").set_index(["task_a", "task_b"])
    # 3 origins: off-diagonal 3 x 3 origin pairs, 6 from different origins, 3 from the same
    assert ex.loc[("a", "b"), "n"] == 6 and inc.loc[("a", "b"), "n"] == 9 and only.loc[("a", "b"), "n"] == 3
    # diagonal: distinct items of the same task always come from different origins (never an item with itself)
    assert ex.loc[("a", "a"), "n"] == 3 and inc.loc[("a", "a"), "n"] == 3
    assert only.loc[("a", "a"), "n"] == 0 and math.isnan(only.loc[("a", "a"), "mean"])
    # symmetric, and the same task is far more similar than two tasks
    assert ex.loc[("a", "b"), "mean"] == pytest.approx(ex.loc[("b", "a"), "mean"])
    assert ex.loc[("a", "a"), "mean"] > 0.8 > abs(ex.loc[("a", "b"), "mean"])
    # the mean is the mean over the cross-origin pairs
    sel = table[(~table["same_origin"]) & (table["task_a"].isin(["a", "b"])) & (table["task_b"].isin(["a", "b"]))
                & (table["task_a"] != table["task_b"])]
    assert ex.loc[("a", "b"), "mean"] == pytest.approx(sel["cosine"].mean())
    with pytest.raises(ValueError):
        sim.by_task(table, "some")  # type: ignore[arg-type]


def test_matrix_and_per_item_matrix():
    items = sim.collect(synthetic_prompts())
    agg = sim.by_task(sim.similarity_table(items, "both"))
    with pytest.raises(ValueError, match="definition"):
        sim.matrix(agg, "toy")
    m = sim.matrix(agg, "toy", definition="token-mean")
    assert list(m.index) == list(m.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(m.to_numpy(), m.to_numpy().T)
    n = sim.matrix(agg, "toy", "n", definition="flat")
    assert n.loc["a", "b"] == 6
    with pytest.raises(ValueError, match="backbone"):
        sim.matrix(agg, "nope", definition="flat")
    per = sim.per_item_matrix(items, "flat")
    assert per.shape == (9, 9) and "b/vocab5000-s1-L4" in per.index
    np.testing.assert_allclose(np.diag(per.to_numpy()), 1.0)
    with pytest.raises(ValueError, match="one backbone"):
        sim.per_item_matrix(items + sim.collect(synthetic_prompts("wide", dim=8)), "flat")


# ------------------------------------------------------------------------------------------ geometry
def _random_sym(n, rng):
    a = rng.uniform(-1, 1, size=(n, n))
    a = (a + a.T) / 2
    np.fill_diagonal(a, 1.0)
    names = [f"t{i}" for i in range(n)]
    return pd.DataFrame(a, index=names, columns=names)


def test_geometry_identical_is_one_with_small_p():
    m = _random_sym(6, np.random.default_rng(0))
    g = sim.geometry_correlation(m, m.copy())
    assert g["r"] == pytest.approx(1.0)
    assert g["n_tasks"] == 6 and g["tasks"] == list(m.index)
    assert g["exact"] and g["n_permutations"] == 720
    assert g["p_value"] < 0.01
    # a monotone transform (another model's cosine scale) keeps Spearman r at 1; order of tasks does not matter
    shuffled = (m**3).loc[m.index[::-1], m.index[::-1]]
    assert sim.geometry_correlation(m, shuffled)["r"] == pytest.approx(1.0)
    assert sim.geometry_correlation(m, m, method="pearson")["r"] == pytest.approx(1.0)


def test_geometry_unrelated_is_near_zero():
    rng = np.random.default_rng(1)
    g = sim.geometry_correlation(_random_sym(10, rng), _random_sym(10, rng), n_permutations=500, seed=0)
    assert abs(g["r"]) < 0.35
    assert g["p_value"] > 0.05
    assert not g["exact"] and g["n_permutations"] == 500


def test_geometry_needs_three_shared_tasks():
    rng = np.random.default_rng(2)
    a, b = _random_sym(4, rng), _random_sym(4, rng)
    b.index = b.columns = ["t0", "t1", "x", "y"]
    with pytest.raises(ValueError, match="at least 3 tasks"):
        sim.geometry_correlation(a, b)


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def two_backbone_store(tmp_path_factory):
    from tpv_core.store import PromptStore

    store = PromptStore(tmp_path_factory.mktemp("zoo"))
    for p in synthetic_prompts("toy", dim=16, tasks=("a", "b", "c", "d"), seeds=(0, 1)) + \
            synthetic_prompts("wide", dim=24, tasks=("a", "b", "c"), seeds=(0, 1), base=1):
        store.save(p)
    return store


def run_cli(capsys, *argv):
    from tpv_core.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_similarity_two_backbones(two_backbone_store, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "similarity", two_backbone_store.root, "--definition", "both",
                                "--per-origin", "--out", out, "--format", "csv,html")
    assert code == 0, err
    assert "toy · flat" in stdout and "wide · token-mean" in stdout
    assert "task geometry across backbones" in stdout and "spearman_r" in stdout
    pairs = pd.read_csv(out / "similarity_pairs.csv")
    assert set(pairs["backbone"]) == {"toy", "wide"} and set(pairs["definition"]) == {"flat", "token-mean"}
    assert (pairs["origin_a"] != pairs["origin_b"]).any()
    assert (out / "similarity_by_task.csv").exists() and (out / "similarity_geometry.csv").exists()
    assert "<html" in (out / "similarity_toy_flat.html").read_text()[:200].lower()
    assert (out / "similarity_items_wide_token-mean.csv").exists()
    assert (out / "similarity_backbones_flat.html").exists()
    geo = pd.read_csv(out / "similarity_geometry.csv")
    assert geo["n_tasks"].tolist() == [3, 3]


def test_cli_similarity_filters_and_messages(two_backbone_store, tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "similarity", two_backbone_store.root, "--backbone", "toy", "--tasks", "a", "b",
                              "--of", "prompts", "--same-origin", "only")
    assert code == 0
    assert "prompts P" in stdout and "wide" not in stdout and "geometry" not in stdout
    code, _, err = run_cli(capsys, "similarity", tmp_path / "empty")
    assert code == 1 and "no prompts" in err
    code, _, err = run_cli(capsys, "similarity", two_backbone_store.root, "--tasks", "zzz")
    assert code == 2 and "zzz" in err
    code, _, err = run_cli(capsys, "similarity", two_backbone_store.root, "--format", "pdf")
    assert code == 2 and "pdf" in err


def test_cli_names_zero_vectors(tmp_path, capsys):
    from tpv_core.store import PromptStore

    store = PromptStore(tmp_path / "store")
    prompts = synthetic_prompts(tasks=("a", "b"), seeds=(0, 1))
    kept = prompts[0]  # a/seed 0 never beat its origin: the stored prompt is the origin itself
    prompts[0] = SoftPrompt(kept.origin.tensor.clone(), kept.origin, kept.task, kept.backbone, kept.metadata)
    for p in prompts:
        store.save(p)
    code, stdout, err = run_cli(capsys, "similarity", store.root)
    assert code == 0, err
    assert "1 all-zero vector(s)" in err and f"toy:a/{kept.origin.id}" in err
    assert [z.label for z in sim.zero_items(sim.collect(prompts))] == [f"a/{kept.origin.id}"]
    assert sim.zero_items(sim.collect(prompts, "prompt")) == []  # the prompt itself is not zero


def test_similarity_cli_and_workflow_agree(two_backbone_store, tmp_path, capsys):
    from tpv_core.cli import main
    from tpv_core.workflows.analysis import geometry_table, task_similarity

    out = tmp_path / "sim"
    assert main(["similarity", "--store", str(two_backbone_store.root), "--definition", "both", "--out", str(out),
                 "--format", "csv", "--permutations", "50"]) == 0
    items = sim.collect(two_backbone_store.load_all(), "vector")
    res = task_similarity(items, list(sim.DEFINITIONS))
    cli = pd.read_csv(out / "similarity_by_task.csv")
    assert len(cli) == len(res.by_task)
    merged = cli.merge(res.by_task, on=["backbone", "definition", "task_a", "task_b"], suffixes=("_cli", "_wf"))
    assert len(merged) == len(cli)
    assert (merged["mean_cli"] - merged["mean_wf"]).abs().max() < 1e-9
    geo = geometry_table({k: m.mean for k, m in res.matrices.items()}, n_permutations=50)
    cli_geo = pd.read_csv(out / "similarity_geometry.csv")
    assert list(cli_geo["spearman_r"].round(9)) == list(geo.dropna(subset=["r"])["r"].round(9))
