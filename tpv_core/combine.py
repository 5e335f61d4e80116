"""Combining task prompt vectors: P = P0 + lambda * merge(w_1 tau_1, ..., w_n tau_n), and the searches
that pick lambda and the weights on a validation score.

The merge methods (``sum`` = the paper, ``ties``, ``dare``) live one per module in :mod:`tpv_core.merges`
behind one signature and the registry :data:`MERGE_METHODS`. Scores for the searches are callables given
by the caller (e.g. a validation-set evaluation); this module evaluates nothing itself.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from tpv_core.merges import MERGE_METHODS, MergedVector, dare_merge, get_method, ties_merge, weighted_sum
from tpv_core.prompts import Origin, TaskPromptVector, require_finite_number

__all__ = ["MERGE_METHODS", "MergedVector", "combine_prompt", "dare_merge", "default_lambda_grid", "get_method",
           "lambda_search", "merge", "ties_merge", "weighted_sum", "weights_search"]


def merge(method: str, vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None = None,
          **options: Any) -> TaskPromptVector:
    """``MERGE_METHODS[method](vectors, weights, **options)`` with a clear error for an unknown name."""
    return get_method(method)(vectors, weights, **options)


def combine_prompt(vectors: Sequence[TaskPromptVector], weights: Sequence[float] | None, origin: Origin | torch.Tensor,
                   coef: float = 1.0, method: str = "sum", **options: Any) -> torch.Tensor:
    """The prompt tensor P0 + coef * merge(vectors, weights): with ``method="sum"``, P0 + coef * sum_i w_i tau_i.
    Weights and ``coef`` must be finite numbers (a `NonFiniteValueError` otherwise)."""
    coef = require_finite_number(coef, "the coefficient (lambda)")
    return merge(method, vectors, weights, **options).apply_to(origin, coef)


# --------------------------------------------------------------------------------------------------
# searches
# --------------------------------------------------------------------------------------------------
def default_lambda_grid() -> list[float]:
    """0, 0.05, ..., 1 (21 values)."""
    return [round(0.05 * i, 2) for i in range(21)]


def _finite(x: float) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def lambda_search(score: Callable[[float], float], grid: Sequence[float] | None = None) -> tuple[float, pd.DataFrame]:
    """Evaluate ``score(lambda)`` on every grid value (default 0..1 step 0.05) and return the best lambda
    and the table (columns lambda, score, best).

    Ties go to the **smallest** lambda: among equally good scores, the prompt nearest the origin (the
    smallest step along the combined vector) is kept. NaN scores never win; all-NaN is an error.
    """
    grid = default_lambda_grid() if grid is None else [require_finite_number(g, "a lambda grid value") for g in grid]
    if not grid:
        raise ValueError("lambda_search needs a non-empty grid")
    rows = [{"lambda": float(lam), "score": float(score(float(lam)))} for lam in grid]
    table = pd.DataFrame(rows)
    ok = table[table["score"].map(_finite)]
    if ok.empty:
        raise ValueError("every lambda scored NaN; check the score function (empty validation split?)")
    best_score = ok["score"].max()
    best = float(ok.loc[ok["score"] == best_score, "lambda"].min())
    table["best"] = table["lambda"] == best
    return best, table


def weights_search(
    score: Callable[[Sequence[float]], float],
    n_vectors: int,
    grid: Sequence[float] | None = None,
    budget: int = 50,
    method: str = "coordinate",
    init: Sequence[float] | None = None,
) -> tuple[list[float], pd.DataFrame]:
    """Search one weight per vector to maximise ``score(weights)``; at most ``budget`` score calls.

    ``grid``: the values each weight may take (default 0, 0.1, ..., 1).
    ``coordinate``: start at ``init`` (default all 1.0: the plain sum), then cycle over the vectors,
    trying every grid value for one weight at a time with the others fixed and keeping any improvement;
    stops when the budget is spent or a full cycle improves nothing. Repeated weight vectors are not
    re-scored (and not charged). ``grid``: score the whole product grid (len(grid) ** n_vectors calls);
    raises ValueError when that exceeds the budget. Ties keep the earlier-scored weights.

    Returns (best weights, table with one row per call: call, w0..w{n-1}, score, best_so_far).
    """
    if n_vectors < 1:
        raise ValueError("weights_search needs n_vectors >= 1")
    if budget < 1:
        raise ValueError("weights_search needs a budget of at least one score call")
    grid = ([round(0.1 * i, 2) for i in range(11)] if grid is None
            else [require_finite_number(g, "a weight grid value") for g in grid])
    if not grid:
        raise ValueError("weights_search needs a non-empty grid")
    if init is not None:
        init = [require_finite_number(w, f"initial weight {i + 1}") for i, w in enumerate(init)]
    cache: dict[tuple[float, ...], float] = {}
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {"weights": None, "score": -math.inf}

    def call(weights: tuple[float, ...]) -> float:
        if weights in cache:
            return cache[weights]
        s = float(score(list(weights)))
        cache[weights] = s
        if _finite(s) and s > best["score"]:
            best.update(weights=weights, score=s)
        rows.append({"call": len(rows) + 1, **{f"w{i}": w for i, w in enumerate(weights)}, "score": s,
                     "best_so_far": best["score"] if best["weights"] is not None else math.nan})
        return s

    if method == "grid":
        need = len(grid) ** n_vectors
        if need > budget:
            raise ValueError(f"a full grid search needs {need} score calls ({len(grid)} values ^ {n_vectors} weights) "
                             f"but the budget is {budget}; raise the budget, coarsen the grid or use method='coordinate'")
        for combo in itertools.product(grid, repeat=n_vectors):
            call(tuple(combo))
    elif method == "coordinate":
        current = tuple(float(w) for w in (init if init is not None else [1.0] * n_vectors))
        if len(current) != n_vectors:
            raise ValueError(f"init has {len(current)} weights for {n_vectors} vectors")
        call(current)
        if best["weights"] is not None:
            current = best["weights"]
        done = False
        while not done:
            improved = False
            for i in range(n_vectors):
                for g in grid:
                    if len(cache) >= budget:
                        done = True
                        break
                    cand = current[:i] + (g,) + current[i + 1:]
                    if cand in cache:
                        continue
                    before = best["score"]
                    call(cand)
                    if best["score"] > before:
                        current, improved = best["weights"], True
                if done:
                    break
            if not improved:
                done = True
    else:
        raise ValueError(f"unknown search method {method!r}; choose 'coordinate' or 'grid'")
    if best["weights"] is None:
        raise ValueError("every weight vector scored NaN; check the score function")
    cols = ["call", *[f"w{i}" for i in range(n_vectors)], "score", "best_so_far"]
    return [float(w) for w in best["weights"]], pd.DataFrame(rows, columns=cols)
