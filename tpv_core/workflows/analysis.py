"""Similarity matrices per backbone and the cross-backbone geometry table: the analysis behind
``tpv similarity`` and the app's Similarity and Projection pages, computed one way for all of them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from tpv_core import similarity as sim


@dataclass(frozen=True)
class TaskMatrices:
    """One backbone's task x task cosine under one definition: the mean over origin pairs, its std and the
    number of pairs per cell."""

    backbone: str
    definition: str
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame


@dataclass(frozen=True)
class TaskSimilarity:
    pairs: pd.DataFrame  # every compared pair of items (similarity.similarity_table)
    by_task: pd.DataFrame  # aggregated per task pair (similarity.by_task)
    matrices: dict[tuple[str, str], TaskMatrices]  # (backbone, definition) -> matrices

    def means(self, definition: str) -> dict[str, pd.DataFrame]:
        """Backbone -> mean matrix, for one definition."""
        return {bb: m.mean for (bb, d), m in self.matrices.items() if d == definition}


def task_similarity(items: Sequence[sim.Item], definitions: Sequence[str] = ("flat",), *,
                    same_origin: str = "exclude", order: Sequence[str] | None = None) -> TaskSimilarity:
    """Cosine of every pair of items, aggregated per task pair, and one matrix set per (backbone,
    definition) that has any pair (tasks in ``order`` where given, else the similarity module's order)."""
    pairs = sim.similarity_table(items, list(definitions))
    agg = sim.by_task(pairs, same_origin=same_origin) if not pairs.empty else pairs
    mats: dict[tuple[str, str], TaskMatrices] = {}
    backbones = list(dict.fromkeys(it.backbone for it in items))
    for bb in backbones:
        for d in definitions:
            part = agg[(agg["backbone"] == bb) & (agg["definition"] == d)] if not agg.empty else agg
            if part.empty:
                continue
            present = set(part["task_a"])
            tasks = [t for t in order if t in present] if order is not None else None
            mean, std, n = (sim.matrix(agg, bb, v, definition=d, tasks=tasks) for v in ("mean", "std", "n"))
            mats[(bb, d)] = TaskMatrices(bb, d, mean, std, n)
    return TaskSimilarity(pairs, agg, mats)


def geometry_table(means: Mapping[tuple[str, str], pd.DataFrame], *, n_permutations: int = 1000) -> pd.DataFrame:
    """Correlation of task geometry (Spearman of the upper triangles, Mantel permutation p-value) for every
    pair of backbones under each definition; ``means`` maps (backbone, definition) to a mean matrix. A
    pair that cannot be compared (too few shared tasks) gets a row with a ``note`` instead of numbers."""
    rows = []
    definitions = list(dict.fromkeys(d for _, d in means))
    for d in definitions:
        bbs = [bb for bb, dd in means if dd == d]
        for a, b in itertools.combinations(bbs, 2):
            row = {"backbone_a": a, "backbone_b": b, "definition": d}
            try:
                g = sim.geometry_correlation(means[(a, d)], means[(b, d)], n_permutations=n_permutations)
            except ValueError as exc:
                rows.append({**row, "note": str(exc)})
                continue
            rows.append({**row, "method": g["method"], "r": g["r"], "p_value": g["p_value"], "n_tasks": g["n_tasks"],
                         "n_pairs": g["n_pairs"],
                         "test": "exact" if g["exact"] else f"{g['n_permutations']} permutations",
                         "tasks": " ".join(map(str, g["tasks"]))})
    return pd.DataFrame(rows)
