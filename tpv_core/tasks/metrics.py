"""Task metrics and mapping generated text to labels.

Conventions (all metrics are fractions in [0, 1]):

* ``accuracy``: share of predictions equal to the gold class (STS-B: gold grid class).
* ``f1`` (binary tasks): F1 of class index 1, GLUE's convention (MRPC/QQP: the positive
  "equivalent"/"duplicate" class). For QNLI/RTE index 1 is ``not_entailment``; the index rule is
  kept for every binary task so the number is always defined the same way.
* ``macro_f1`` (multi-class): unweighted mean of per-class F1 over the classes that occur in the
  gold labels or the predictions (scikit-learn's default label set).
* ``pearson`` / ``spearman`` (STS-B): the prediction is the grid value (0.0, 0.2, ... 5.0) of the
  predicted class, compared with the true float scores. A correlation with a constant series is
  reported as 0.0 (instead of NaN), so lambda searches and tables stay numeric.

Invalid predictions (``None``, e.g. a generation that matched no verbaliser) count as wrong for
accuracy/F1 and score 2.5 (mid-scale) for the correlations.

Exact match compares whole normalised strings (strip, lower-case, collapse whitespace): no
truncation (the reference code cut both sides to 16 characters, so long labels sharing a prefix
compared equal).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from tpv_core.tasks.spec import GRID, GRID_MAX, TaskSpec

_WS = re.compile(r"\s+")


def normalise_text(text: str | None) -> str:
    return _WS.sub(" ", str(text or "")).strip().lower()


def exact_match(predicted_text: str | None, gold_text: str | None) -> bool:
    """Whole-string equality after normalisation (strip, lower-case, collapse whitespace)."""
    return normalise_text(predicted_text) == normalise_text(gold_text)


def text_to_label(task: TaskSpec, text: str | None) -> int | None:
    """Label index of a generated text: exact (normalised) match with a verbaliser, then with a
    label name; for STS-B also a number exactly on the 0.2 grid ("2.40", "3"). Else None."""
    t = normalise_text(text)
    if not t:
        return None
    for group in (task.words, task.label_names):
        for i, w in enumerate(group):
            if normalise_text(w) == t:
                return i
    if task.regression:
        try:
            v = float(t)
        except ValueError:
            return None
        if not math.isfinite(v):
            return None
        for i, g in enumerate(GRID):
            if abs(g - v) < 1e-9:
                return i
    return None


def _gold(task: TaskSpec, rows_or_gold: Sequence[Any]) -> list[float] | list[int]:
    """Gold labels: ints for classification; for regression the true float scores.

    Rows (mappings) give their label; for regression a bare int is read as a grid index and a
    float as a score.
    """
    out: list[Any] = []
    for g in rows_or_gold:
        if isinstance(g, Mapping):
            out.append(float(task.raw_label(g)) if task.regression else task.label_of(g))
        elif task.regression:
            out.append(GRID[g] if isinstance(g, int) and not isinstance(g, bool) else float(g))
        else:
            out.append(int(g))
    return out


def _f1_of(cls: int, pred: Sequence[int | None], gold: Sequence[int]) -> float:
    tp = sum(1 for p, g in zip(pred, gold) if p == cls and g == cls)
    fp = sum(1 for p, g in zip(pred, gold) if p == cls and g != cls)
    fn = sum(1 for p, g in zip(pred, gold) if p != cls and g == cls)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n < 2:
        return 0.0
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _ranks(x: Sequence[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    return _pearson(list(map(float, x)), list(map(float, y)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return _pearson(_ranks(list(map(float, x))), _ranks(list(map(float, y))))


def compute_metrics(task: TaskSpec, predictions: Sequence[int | None], rows_or_gold: Sequence[Any]) -> dict[str, float]:
    """The task's metrics (``task.metrics``) for predicted class indices against gold rows/labels."""
    preds = [None if p is None else int(p) for p in predictions]
    gold = _gold(task, rows_or_gold)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions for {len(gold)} gold labels")
    if not gold:
        raise ValueError("no examples to score")
    gold_cls = [task.label_of({"label": g}) for g in gold] if task.regression else list(gold)
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "accuracy":
            out[m] = sum(p == g for p, g in zip(preds, gold_cls)) / len(gold_cls)
        elif m == "f1":
            out[m] = _f1_of(1, preds, gold_cls)
        elif m == "macro_f1":
            present = [c for c in range(task.num_labels) if c in set(gold_cls) or c in set(preds)]
            out[m] = sum(_f1_of(c, preds, gold_cls) for c in present) / len(present) if present else 0.0
        elif m in ("pearson", "spearman"):
            pv = [GRID_MAX / 2 if p is None or not 0 <= p < len(GRID) else GRID[p] for p in preds]
            out[m] = pearson(pv, gold) if m == "pearson" else spearman(pv, gold)
    return out
