"""2-D projections of task prompt vectors (or prompts): UMAP with a cosine metric, PCA as the fallback.

Inputs are the flattened L x d tensors. Items of different backbones (widths) or prompt lengths live in
different spaces, so each (backbone, length) group is projected on its own; the result is one DataFrame
with a ``panel`` column (the backbone, plus ``L=..`` when one backbone has several lengths) for facets.

umap-learn is slow to start (numba: ~20 s first import, ~11 s first fit per process); it is imported
only inside :func:`project` and :func:`warm_umap`, never when this module is imported.
"""

from __future__ import annotations

import time
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from tpv_core.similarity import Item

METHODS = ("umap", "pca")
MIN_UMAP_POINTS = 6
COLUMNS = ["x", "y", "backbone", "panel", "task", "origin", "seed", "label", "what", "method"]


def _matrix(items: Sequence[Item]) -> np.ndarray:
    return np.stack([it.tensor.detach().float().cpu().reshape(-1).numpy().astype(np.float64) for it in items])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def pca_2d(x: np.ndarray, random_state: int = 0) -> np.ndarray:
    """First two principal components of the rows of x (zeros where fewer components exist)."""
    n = x.shape[0]
    out = np.zeros((n, 2))
    if n < 2:
        return out
    from sklearn.decomposition import PCA

    k = min(2, n - 1, x.shape[1])
    if k >= 1:
        out[:, :k] = PCA(n_components=k, random_state=random_state).fit_transform(x)
    # fix the sign of each axis (largest |loading| positive) so reruns and subsets read alike
    for j in range(2):
        col = out[:, j]
        if col.size and col[np.argmax(np.abs(col))] < 0:
            out[:, j] = -col
    return out


def umap_2d(x: np.ndarray, n_neighbors: int, random_state: int = 0, min_dist: float = 0.1) -> np.ndarray:
    import warnings

    import umap  # slow first import (numba); see the module docstring

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", spectral-init fallbacks
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric="cosine", min_dist=min_dist,
                            random_state=random_state, n_jobs=1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def _groups(items: Sequence[Item]) -> dict[tuple[str, int], list[int]]:
    groups: dict[tuple[str, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.backbone, int(it.tensor.shape[0])), []).append(i)
    return groups


def project(
    items: Sequence[Item],
    method: Literal["umap", "pca"] = "umap",
    n_neighbors: int = 15,
    random_state: int = 0,
    min_umap_points: int = MIN_UMAP_POINTS,
    min_dist: float = 0.1,
) -> tuple[pd.DataFrame, str]:
    """Project items to 2-D, one projection per backbone (and prompt length).

    ``umap``: UMAP on the flattened tensors with ``metric="cosine"`` and a fixed ``random_state``;
    ``n_neighbors`` is clamped to n - 1, and groups with fewer than ``min_umap_points`` items fall back
    to PCA. ``pca``: PCA of the flattened tensors scaled to unit length (so it sees the same directions
    as the cosine UMAP). All-zero items (a prompt that never left its origin) have no direction, so
    they are left out and the note names them. Returns (DataFrame with x, y, backbone, panel, task,
    origin, seed, label, what, method; a note for people saying what was done and every fallback).
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose 'umap' or 'pca'")
    has_direction = [bool(torch.count_nonzero(it.tensor)) for it in items]
    zero = [f"{it.backbone} {it.label}" for it, ok in zip(items, has_direction) if not ok]
    notes = [f"left out {len(zero)} zero vector{'s' if len(zero) != 1 else ''} (no direction): {', '.join(zero)}"
             ] if zero else []
    items = [it for it, ok in zip(items, has_direction) if ok]
    if not items:
        return pd.DataFrame(columns=COLUMNS), "; ".join(["nothing to project", *notes])
    groups = _groups(items)
    backbone_lengths: dict[str, int] = {}
    for bb, _ in groups:
        backbone_lengths[bb] = backbone_lengths.get(bb, 0) + 1
    frames = []
    for (bb, length), idx in groups.items():
        sub = [items[i] for i in idx]
        panel = bb if backbone_lengths[bb] == 1 else f"{bb} L={length}"
        x = _matrix(sub)
        n = len(sub)
        used = method
        if method == "umap":
            k = min(int(n_neighbors), n - 1)
            if n < max(int(min_umap_points), 3) or k < 2:
                used = "pca"
                notes.append(f"{panel}: PCA instead of UMAP ({n} point{'s' if n != 1 else ''}, UMAP needs at least "
                             f"{max(int(min_umap_points), 3)})")
            else:
                try:
                    coords = umap_2d(x, k, random_state, min_dist)
                    msg = f"{panel}: UMAP (cosine, n_neighbors={k}"
                    msg += f", clamped from {n_neighbors}" if k != n_neighbors else ""
                    notes.append(msg + f", random_state={random_state}) of {n} points")
                except Exception as exc:  # noqa: BLE001 - a failed fit must not lose the view
                    used = "pca"
                    notes.append(f"{panel}: PCA instead of UMAP (UMAP failed: {exc})")
        if used == "pca":
            coords = pca_2d(_unit_rows(x), random_state)
            if method == "pca":
                notes.append(f"{panel}: PCA of {n} unit-length flattened vectors")
        frames.append(pd.DataFrame({
            "x": coords[:, 0], "y": coords[:, 1], "backbone": bb, "panel": panel,
            "task": [it.task for it in sub], "origin": [it.origin for it in sub], "seed": [it.seed for it in sub],
            "label": [it.label for it in sub], "what": [it.what for it in sub], "method": used,
        }, index=idx))
    df = pd.concat(frames).sort_index().reset_index(drop=True)
    return df[COLUMNS], "; ".join(notes)


def warm_umap(n: int = 20, dim: int = 8, seed: int = 0) -> float:
    """Import umap and fit a tiny random set once, so the first real fit in this process is fast.

    Meant to run in a background thread at app start; returns the seconds it took.
    """
    t0 = time.perf_counter()
    x = np.random.default_rng(seed).normal(size=(n, dim))
    umap_2d(x, n_neighbors=5, random_state=seed)
    return time.perf_counter() - t0
