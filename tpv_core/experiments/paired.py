"""Paired comparisons of few-shot initialisations.

Every few-shot run is one cell (origin seed x data seed) of one (target, k); all initialisations of a cell
share the origin, the k training rows and the batch order, so two initialisations are compared on the
differences within cells. Per (target, k) and comparison: the mean difference with its 95 % t-interval, the
wins of each side, a two-sided Wilcoxon signed-rank test (zero differences dropped, the exact distribution
when there are no ties; the primary test) and a two-sided paired t-test beside it.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from tpv_core.experiments.common import mean_ci

#: The comparisons of the paper's few-shot claim: TPV against the random origin, the better SPoT and the
#: multi-task prompt.
COMPARISONS = (("tpv", "random"), ("tpv", "best_spot"), ("tpv", "multitask"))
CELL = ["seed", "data_seed"]
COLUMNS = ["target", "k", "a", "b", "b_init", "n", "mean_diff", "ci_low", "ci_high", "a_wins", "b_wins", "ties",
           "p_wilcoxon", "p_ttest"]


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; nan when every difference is zero (no evidence either way)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if len(d) == 0 or not np.any(d != 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when ties force the normal approximation
        return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def ttest_p(diffs: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (one-sample t on the differences); nan for n < 2 or zero spread."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2 or float(np.std(d)) == 0.0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def best_spot(runs: pd.DataFrame) -> str | None:
    """The ``spot:<source>`` init with the higher mean score in ``runs`` (one target and k), or None."""
    spots = runs[runs["init"].astype(str).str.startswith("spot:")]
    if spots.empty:
        return None
    return str(spots.groupby("init")["score"].mean().idxmax())


def paired_tests(runs: pd.DataFrame, comparisons: Sequence[tuple[str, str]] = COMPARISONS) -> pd.DataFrame:
    """One row per (target, k, comparison) with both inits present in at least one common cell. ``best_spot``
    stands for the SPoT init with the higher mean at that (target, k) (named in ``b_init``)."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs = runs.copy()
    if "data_seed" not in runs.columns:
        runs["data_seed"] = runs["seed"]
    out = []
    for (target, k), part in runs.groupby(["target", "k"], sort=True):
        wide = part.pivot_table(index=CELL, columns="init", values="score", aggfunc="first")
        for a, b in comparisons:
            b_init = best_spot(part) if b == "best_spot" else b
            if b_init is None or a not in wide.columns or b_init not in wide.columns:
                continue
            both = wide[[a, b_init]].dropna()
            if both.empty:
                continue
            d = (both[a] - both[b_init]).to_numpy(dtype=float)
            ci = mean_ci(d)
            out.append({"target": target, "k": int(k), "a": a, "b": b, "b_init": b_init, "n": len(d),
                        "mean_diff": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                        "a_wins": int((d > 0).sum()), "b_wins": int((d < 0).sum()), "ties": int((d == 0).sum()),
                        "p_wilcoxon": wilcoxon_p(d), "p_ttest": ttest_p(d)})
    return pd.DataFrame(out, columns=COLUMNS)
