"""Cosine similarity between task prompt vectors (or soft prompts), as tidy tables and task x task matrices.

Two definitions of "the cosine of two L x d prompts" are in use, and the paper's code switched between
them silently. Here every function takes ``definition`` and every table carries it:

* ``flat``: cosine of the flattened tensors (L*d numbers): rows are compared position by position;
* ``token-mean``: cosine of the mean over the L rows (one d-vector each): the position of a row in the
  prompt does not matter, and rows that cancel in the mean do not count.

Prompts of different backbones (widths) are never compared directly; :func:`geometry_correlation`
compares two backbones through the correlation of their task x task similarity matrices (a Mantel test).

Longer than 350 lines because every table here (pairs, by task, per item, the cross-backbone correlation)
carries both cosine definitions and the same column schema; they are one concern and read best together.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from tpv_core.prompts import PromptMismatchError, SoftPrompt

Definition = Literal["flat", "token-mean"]
DEFINITIONS: tuple[str, ...] = ("flat", "token-mean")
SAME_ORIGIN_MODES: tuple[str, ...] = ("exclude", "include", "only")
TABLE_COLUMNS = ["backbone", "definition", "what", "task_a", "origin_a", "seed_a", "task_b", "origin_b", "seed_b",
                 "same_origin", "same_task", "cosine"]
AGG_COLUMNS = ["backbone", "definition", "task_a", "task_b", "mean", "std", "n"]


def check_definition(definition: str) -> str:
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown cosine definition {definition!r}; choose 'flat' (flattened L x d tensors) "
                         "or 'token-mean' (mean over the L prompt rows)")
    return definition


def _definitions(definition: str | Sequence[str]) -> list[str]:
    if isinstance(definition, str):
        defs = list(DEFINITIONS) if definition == "both" else [definition]
    else:
        defs = list(definition)
    return [check_definition(d) for d in defs]


def reduce(tensor: torch.Tensor, definition: str) -> torch.Tensor:
    """The 1-D vector whose cosine is taken: the flattened tensor (``flat``) or the row mean (``token-mean``)."""
    check_definition(definition)
    t = tensor.detach().to(torch.float64).cpu()
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"expected an L x d prompt tensor, got shape {tuple(tensor.shape)}")
    return t.reshape(-1) if definition == "flat" else t.mean(dim=0)


def cosine(a: torch.Tensor, b: torch.Tensor, definition: Definition) -> float:
    """Cosine similarity of two prompt tensors (or vectors) under ``definition``.

    ``flat`` needs equal shapes; ``token-mean`` only equal widths d. The cosine with an all-zero tensor
    is undefined and returned as NaN.
    """
    if definition == "flat" and tuple(a.shape) != tuple(b.shape):
        raise PromptMismatchError(f"flat cosine needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    va, vb = reduce(a, definition), reduce(b, definition)
    if va.numel() != vb.numel():
        raise PromptMismatchError(f"cannot compare prompts of widths {va.numel()} and {vb.numel()} "
                                  "(different backbones); compare their task geometry instead")
    na, nb = float(va.norm()), float(vb.norm())
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(torch.clamp(va @ vb / (na * nb), -1.0, 1.0))


def cosine_matrix(tensors: Sequence[torch.Tensor], definition: Definition) -> np.ndarray:
    """n x n cosine matrix (float64) of ``tensors`` under ``definition``; NaN rows for all-zero tensors."""
    if not tensors:
        return np.zeros((0, 0))
    if definition == "flat":
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise PromptMismatchError(f"flat cosine needs equal shapes, got {sorted(shapes)}")
    vecs = [reduce(t, definition) for t in tensors]
    widths = {v.numel() for v in vecs}
    if len(widths) > 1:
        raise PromptMismatchError(f"cannot compare prompts of different widths {sorted(widths)} (different "
                                  "backbones); compare them per backbone")
    m = torch.stack(vecs)
    norms = m.norm(dim=1, keepdim=True)
    unit = m / torch.where(norms == 0, torch.ones_like(norms), norms)
    out = (unit @ unit.T).clamp(-1.0, 1.0).numpy()
    zero = (norms.squeeze(1) == 0).numpy()
    out[zero, :] = np.nan
    out[:, zero] = np.nan
    return out


# --------------------------------------------------------------------------------------------------
# items: what is compared
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One tensor to compare: a task prompt vector (``what="vector"``) or a soft prompt (``"prompt"``)."""

    backbone: str
    task: str
    origin: str
    seed: int
    tensor: torch.Tensor
    what: str = "vector"

    @property
    def label(self) -> str:
        return f"{self.task}/{self.origin}"

    @property
    def dim(self) -> int:
        return int(self.tensor.shape[-1])


def collect(prompts: Iterable[SoftPrompt], what: Literal["vector", "prompt"] = "vector") -> list[Item]:
    """Items for the similarity and projection functions: tau = P - P0 (``vector``) or P itself (``prompt``)."""
    if what not in ("vector", "prompt"):
        raise ValueError(f"what must be 'vector' (tau = P - P0) or 'prompt' (P), got {what!r}")
    items = []
    for p in prompts:
        tensor = p.vector().tensor if what == "vector" else p.tensor.float()
        items.append(Item(p.backbone, p.task, p.origin.id, int(p.origin.seed), tensor, what))
    return items


def zero_items(items: Sequence[Item]) -> list[Item]:
    """Items whose tensor is all zero: for vectors, a stored prompt equal to its origin (tuning never beat
    the untuned prompt on validation, so the origin was kept). Their cosines are undefined (NaN)."""
    return [it for it in items if not bool(it.tensor.any())]


def _by_backbone(items: Sequence[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.backbone, []).append(it)
    return groups


# --------------------------------------------------------------------------------------------------
# tidy tables
# --------------------------------------------------------------------------------------------------
def similarity_table(items: Sequence[Item], definition: Definition | Sequence[str] | str = "flat") -> pd.DataFrame:
    """All unordered pairs of distinct items within each backbone, one row per pair and definition.

    Columns: backbone, definition, what, task_a, origin_a, seed_a, task_b, origin_b, seed_b, same_origin,
    same_task, cosine. ``definition`` may be one definition, a list, or ``"both"``. Items of different
    backbones are never paired (their widths differ); an item is never paired with itself.
    """
    rows = []
    for d in _definitions(definition):
        for backbone, group in _by_backbone(items).items():
            if d == "flat":
                by_shape: dict[tuple, list[Item]] = {}
                for it in group:
                    by_shape.setdefault(tuple(it.tensor.shape), []).append(it)
                subgroups = list(by_shape.values())  # prompts of different lengths are not comparable flat
            else:
                subgroups = [group]
            for sub in subgroups:
                if len(sub) < 2:
                    continue
                mat = cosine_matrix([it.tensor for it in sub], d)
                for i, j in itertools.combinations(range(len(sub)), 2):
                    a, b = sub[i], sub[j]
                    rows.append((backbone, d, a.what, a.task, a.origin, a.seed, b.task, b.origin, b.seed,
                                 a.origin == b.origin, a.task == b.task, float(mat[i, j])))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def by_task(table: pd.DataFrame, same_origin: Literal["exclude", "include", "only"] = "exclude") -> pd.DataFrame:
    """Aggregate a :func:`similarity_table` per (backbone, definition, task_a, task_b): mean, std, n over
    pairs of items.

    ``same_origin``: ``exclude`` keeps pairs from different origins only (the default: vectors of two
    tasks tuned from the same P0 share the start, which inflates nothing for tau but does for prompts);
    ``only`` keeps same-origin pairs; ``include`` keeps all. The diagonal (task_a == task_b) compares
    distinct items of the same task (an item is never paired with itself), so with ``only`` it is empty
    (n = 0, mean NaN). The result is symmetric: both (a, b) and (b, a) rows are present.
    """
    if same_origin not in SAME_ORIGIN_MODES:
        raise ValueError(f"same_origin must be one of {', '.join(SAME_ORIGIN_MODES)}, got {same_origin!r}")
    if table.empty:
        return pd.DataFrame(columns=AGG_COLUMNS)
    t = table
    if same_origin == "exclude":
        t = t[~t["same_origin"]]
    elif same_origin == "only":
        t = t[t["same_origin"]]
    mirrored = t[t["task_a"] != t["task_b"]].rename(columns={"task_a": "task_b", "task_b": "task_a"})
    both = pd.concat([t[["backbone", "definition", "task_a", "task_b", "cosine"]],
                      mirrored[["backbone", "definition", "task_a", "task_b", "cosine"]]], ignore_index=True)
    agg = (both.groupby(["backbone", "definition", "task_a", "task_b"], sort=False)["cosine"]
           .agg(mean="mean", std="std", n="count").reset_index())
    # every task pair seen in the full table gets a row, even when the filter left no pairs (n = 0)
    full = table[["backbone", "definition", "task_a", "task_b"]]
    cells = pd.concat([full, full.rename(columns={"task_a": "task_b", "task_b": "task_a"})]).drop_duplicates()
    tasks = (pd.concat([table[["backbone", "definition", "task_a"]].rename(columns={"task_a": "task"}),
                        table[["backbone", "definition", "task_b"]].rename(columns={"task_b": "task"})])
             .drop_duplicates())
    diag = tasks.assign(task_a=tasks["task"], task_b=tasks["task"]).drop(columns="task")
    cells = pd.concat([cells, diag]).drop_duplicates()
    out = cells.merge(agg, on=["backbone", "definition", "task_a", "task_b"], how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    order = {t: i for i, t in enumerate(task_order(table))}
    out = out.assign(_a=out["task_a"].map(order), _b=out["task_b"].map(order))
    out = out.sort_values(["backbone", "definition", "_a", "_b"], kind="stable").drop(columns=["_a", "_b"])
    return out[AGG_COLUMNS].reset_index(drop=True)


def task_order(table: pd.DataFrame) -> list[str]:
    """Tasks in order of first appearance in a pair table (or an aggregate)."""
    seen: dict[str, None] = {}
    for a, b in zip(table["task_a"], table["task_b"]):
        seen.setdefault(a)
        seen.setdefault(b)
    return list(seen)


def matrix(agg: pd.DataFrame, backbone: str, value: str = "mean", definition: str | None = None,
           tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Square task x task DataFrame of ``value`` (``mean``, ``std`` or ``n``) for one backbone.

    When ``agg`` holds more than one definition, name the one wanted.
    """
    if value not in ("mean", "std", "n"):
        raise ValueError(f"value must be 'mean', 'std' or 'n', got {value!r}")
    part = agg[agg["backbone"] == backbone]
    if part.empty:
        known = ", ".join(sorted(agg["backbone"].unique())) or "none"
        raise ValueError(f"no similarities for backbone {backbone!r} (backbones: {known})")
    defs = list(dict.fromkeys(part["definition"]))
    if definition is None:
        if len(defs) > 1:
            raise ValueError(f"the table holds definitions {defs}; pass definition= to choose one")
        definition = defs[0]
    part = part[part["definition"] == check_definition(definition)]
    if part.empty:
        raise ValueError(f"no {definition} similarities for backbone {backbone!r}")
    order = list(tasks) if tasks is not None else task_order(part)
    mat = part.pivot(index="task_a", columns="task_b", values=value).reindex(index=order, columns=order)
    mat.index.name, mat.columns.name = "task", "task"
    return mat


def per_item_matrix(items: Sequence[Item], definition: Definition = "flat", backbone: str | None = None) -> pd.DataFrame:
    """Item x item cosine matrix indexed by ``task/origin`` labels (one backbone)."""
    if backbone is not None:
        items = [it for it in items if it.backbone == backbone]
    backbones = sorted({it.backbone for it in items})
    if len(backbones) > 1:
        raise ValueError(f"per_item_matrix compares items of one backbone; got {backbones}: pass backbone=")
    labels, seen = [], {}
    for it in items:
        lab = it.label
        seen[lab] = seen.get(lab, 0) + 1
        labels.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    mat = cosine_matrix([it.tensor for it in items], definition)
    return pd.DataFrame(mat, index=pd.Index(labels, name="item"), columns=pd.Index(labels, name="item"))


# --------------------------------------------------------------------------------------------------
# cross-model geometry (Mantel test)
# --------------------------------------------------------------------------------------------------
def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r between the vector x and each row of y."""
    xc = x - x.mean()
    yc = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / denom


def geometry_correlation(
    mat_a: pd.DataFrame,
    mat_b: pd.DataFrame,
    n_permutations: int = 1000,
    seed: int = 0,
    method: Literal["spearman", "pearson"] = "spearman",
) -> dict:
    """Do two backbones arrange the tasks alike? Correlation of the upper triangles of two task x task
    similarity matrices over their shared tasks, with a Mantel permutation p-value.

    ``method``: ``spearman`` (default; rank correlation, robust to the different cosine scales of two
    models) or ``pearson``. The p-value is one-sided (is the correlation larger than under random task
    labels?): the task labels of ``mat_b`` are permuted (rows and columns together). When the number of
    tasks has at most ``n_permutations`` orderings, all of them are enumerated (exact test; p >= 1/n!),
    otherwise ``n_permutations`` random ones are drawn with ``seed`` and p = (1 + #{r_perm >= r}) / (1 + N).
    Pairs where either matrix is NaN are left out.

    Returns dict(r, p_value, n_tasks, tasks, n_pairs, method, n_permutations, exact).
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    tasks = [t for t in mat_a.index if t in set(mat_b.index) and t in set(mat_a.columns) and t in set(mat_b.columns)]
    if len(tasks) < 3:
        raise ValueError(f"comparing task geometry needs at least 3 tasks shared by both matrices, got {len(tasks)}"
                         f" ({', '.join(map(str, tasks)) or 'none'}); tune prompts for more common tasks")
    a = mat_a.loc[tasks, tasks].to_numpy(dtype=float)
    b = mat_b.loc[tasks, tasks].to_numpy(dtype=float)
    n = len(tasks)
    iu, ju = np.triu_indices(n, k=1)
    ua = a[iu, ju]

    def upper_b(perm: np.ndarray) -> np.ndarray:
        return b[np.ix_(perm, perm)][iu, ju]

    def stat(ub_rows: np.ndarray) -> np.ndarray:
        ub_rows = np.atleast_2d(ub_rows)
        keep_a = ~np.isnan(ua)
        if keep_a.all() and not np.isnan(ub_rows).any():  # the common case, vectorised over permutations
            x, y = (_rank(ua), _rank(ub_rows)) if method == "spearman" else (ua, ub_rows)
            return _pearson_rows(x, y)
        out = np.empty(len(ub_rows))
        for k, ub in enumerate(ub_rows):
            keep = keep_a & ~np.isnan(ub)
            x, y = ua[keep], ub[keep]
            if len(x) < 2:
                out[k] = np.nan
                continue
            if method == "spearman":
                x, y = _rank(x), _rank(y)
            out[k] = _pearson_rows(x, y[None, :])[0]
        return out

    identity = np.arange(n)
    r = float(stat(upper_b(identity))[0])
    n_pairs = int((~np.isnan(ua) & ~np.isnan(upper_b(identity))).sum())
    exact = math.factorial(n) <= n_permutations
    if exact:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.array([rng.permutation(n) for _ in range(n_permutations)])
    if math.isnan(r):
        p = math.nan
    else:
        null = stat(np.stack([upper_b(p_) for p_ in perms]))
        hits = int(np.sum(null >= r - 1e-12))
        p = hits / len(perms) if exact else (1 + hits) / (1 + len(perms))
    return {"r": r, "p_value": float(p), "n_tasks": n, "tasks": tasks, "n_pairs": n_pairs, "method": method,
            "n_permutations": int(len(perms)), "exact": bool(exact)}
