"""2-D projections: PCA and UMAP (cosine), per-backbone separation, tiny-set fallback, `tpv project`."""

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tpv_core.projection import project
from tpv_core.similarity import collect
from synthetic import synthetic_prompts as _synthetic


def synthetic_prompts(*args, **kw):  # a different draw from the similarity tests'
    return _synthetic(*args, gen_seed=2000, **kw)


def test_pca_one_row_per_item_finite():
    items = collect(synthetic_prompts())
    df, note = project(items, method="pca")
    assert len(df) == len(items)
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert list(df["task"]) == [it.task for it in items] and list(df["origin"]) == [it.origin for it in items]
    assert {"x", "y", "backbone", "task", "origin", "seed"} <= set(df.columns)
    assert (df["method"] == "pca").all() and "PCA" in note
    # same task clusters: within-task spread is far smaller than the distance between task centres
    centres = df.groupby("task")[["x", "y"]].mean()
    spread = df.groupby("task")[["x", "y"]].std().to_numpy().max()
    gaps = [np.linalg.norm(centres.loc[a] - centres.loc[b]) for a, b in [("a", "b"), ("a", "c"), ("b", "c")]]
    assert min(gaps) > 3 * spread


def test_tiny_set_falls_back_to_pca_without_umap():
    items = collect(synthetic_prompts(tasks=("a", "b"), seeds=(0, 1)))  # 4 points
    df, note = project(items, method="umap")
    assert len(df) == 4 and (df["method"] == "pca").all()
    assert "PCA instead of UMAP" in note and "4 points" in note
    one, note1 = project(items[:1], method="pca")
    assert one[["x", "y"]].to_numpy().tolist() == [[0.0, 0.0]]
    empty, note0 = project([], method="pca")
    assert empty.empty and "nothing" in note0


def test_backbones_projected_separately():
    items = collect(synthetic_prompts("toy", 16) + synthetic_prompts("wide", 24, seeds=(0, 1), base=1))
    df, note = project(items, method="pca")
    assert df.groupby("backbone").size().to_dict() == {"toy": 9, "wide": 6}
    assert set(df["panel"]) == {"toy", "wide"}
    assert "toy:" in note and "wide:" in note
    # each backbone's projection is the same as projecting it alone
    alone, _ = project([it for it in items if it.backbone == "wide"], method="pca")
    np.testing.assert_allclose(df[df["backbone"] == "wide"][["x", "y"]].to_numpy(), alone[["x", "y"]].to_numpy())
    with pytest.raises(ValueError, match="umap"):
        project(items, method="tsne")  # type: ignore[arg-type]


def test_umap_is_not_imported_with_the_module():
    code = "import sys, tpv_core.projection, tpv_core.similarity, tpv_core.plots; assert 'umap' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_umap_on_twenty_points_is_deterministic():
    items = collect(synthetic_prompts(tasks=("a", "b", "c", "d"), seeds=(0, 1, 2, 3, 4)))  # 20 points
    df, note = project(items, method="umap", n_neighbors=5, random_state=0)
    assert len(df) == 20 and (df["method"] == "umap").all()
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert "UMAP (cosine, n_neighbors=5" in note
    again, _ = project(items, method="umap", n_neighbors=5, random_state=0)
    np.testing.assert_allclose(df[["x", "y"]].to_numpy(), again[["x", "y"]].to_numpy())
    # n_neighbors larger than the set is clamped, and said so
    _, clamped = project(items[:8], method="umap", n_neighbors=15)
    assert "n_neighbors=7, clamped from 15" in clamped


def test_cli_project(tmp_path, capsys):
    from tpv_core.cli import main
    from tpv_core.store import PromptStore

    store = PromptStore(tmp_path / "zoo")
    for p in synthetic_prompts("toy", 16, seeds=(0, 1)) + synthetic_prompts("wide", 24, seeds=(0, 1), base=1):
        store.save(p)
    out = tmp_path / "out"
    code = main(["project", str(store.root), "--method", "pca", "--out", str(out), "--format", "csv,html"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "PCA" in printed.out and "projection.csv" in printed.out
    df = pd.read_csv(out / "projection.csv")
    assert len(df) == 12 and set(df["backbone"]) == {"toy", "wide"}
    assert "<html" in (out / "projection.html").read_text()[:200].lower()
    code = main(["project", str(store.root), "--method", "pca", "--backbone", "wide"])
    printed = capsys.readouterr()
    assert code == 0 and "wide" in printed.out and "toy" not in printed.out
    code = main(["project", str(tmp_path / "nothing")])
    assert code == 1 and "no prompts" in capsys.readouterr().err


def test_zero_vectors_are_left_out_and_named():
    items = collect(synthetic_prompts())
    zeroed = dataclasses.replace(items[0], tensor=torch.zeros_like(items[0].tensor))
    df, note = project([zeroed, *items[1:]], method="pca")
    assert len(df) == len(items) - 1 and zeroed.label not in set(df["label"])
    assert f"left out 1 zero vector (no direction): {zeroed.backbone} {zeroed.label}" in note
    empty, note0 = project([zeroed], method="pca")
    assert empty.empty and "nothing to project" in note0 and zeroed.label in note0
