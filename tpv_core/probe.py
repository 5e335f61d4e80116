"""Linear probes of a frozen backbone: does it already separate a task's labels, before any prompt?

Prompt tuning steers a frozen model; it can only use what the model computes. A linear probe (a
standardised logistic regression trained on the frozen features of training rows and scored on held-out
rows) measures that: when the probe stays at the majority-class rate, a soft prompt of a few tokens
has little to work with, and a failed run says more about the backbone's readout than about the recipe.

Views:
- ``readout``: the input as the family formats it (the text the prompt is tuned on), read where the
  family reads its answer (`Backbone.features`).
- ``pair``: for tasks with two text fields (NLI, paraphrase), each field encoded on its own and
  combined as [u, v, |u - v|, u * v] (the sentence-pair features of sentence encoders). It shows what a
  pair-aware readout could reach; prompt tuning with the default readouts never sees this view.
- ``cosine``: for the same tasks, one feature only, the cosine between the two separately encoded
  fields (the score sentence encoders are trained to make high for related sentences). A probe on it
  is a learned threshold (or, for several classes, ordered cut points) on that one number: what a
  similarity readout without any trained head could reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from tpv_core.tasks.data import load_split, shuffled_rows
from tpv_core.tasks.metrics import compute_metrics

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone
    from tpv_core.tasks.spec import TaskSpec

VIEWS = ("readout", "pair", "cosine")
PAIR_VIEWS = ("pair", "cosine")


@dataclass
class ProbeResult:
    backbone: str
    task: str
    view: str
    train_rows: int
    eval_split: str
    eval_rows: int
    majority: float  # accuracy of always predicting the most frequent training label
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("metrics"))
        return d


@torch.no_grad()
def encode_texts(backbone: "Backbone", texts: Sequence[str], *, batch_size: int = 32, max_length: int = 256,
                 chat: bool = False) -> np.ndarray:
    """(N, d) frozen features of ``texts`` (no prompt), in batches."""
    if not texts:
        raise ValueError("no texts to encode")
    out = []
    for i in range(0, len(texts), batch_size):
        b = backbone.batch(list(texts[i: i + batch_size]), chat=chat, max_length=max_length)
        out.append(backbone.features(b, None).cpu().numpy().astype(np.float32))
    return np.concatenate(out)


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown probe view {view!r}; expected one of {', '.join(VIEWS)}")


def _encode(backbone: "Backbone", task: "TaskSpec", rows: Sequence[dict], view: str, **kw) -> tuple[np.ndarray, ...]:
    """What ``view`` is computed from: (formatted input,) for ``readout``; (u, v), the two fields encoded
    apart, for the pair views, which share it."""
    if view not in PAIR_VIEWS:
        return (encode_texts(backbone, [backbone.format(task, r) for r in rows], **kw),)
    if len(task.text_fields) != 2:
        raise ValueError(f"the {view} view needs a task with two text fields; {task.name} has "
                         f"{len(task.text_fields)} ({', '.join(task.text_fields)})")
    values = [task.text_values(r) for r in rows]
    return (encode_texts(backbone, [v[0] for v in values], **kw), encode_texts(backbone, [v[1] for v in values], **kw))


def _view_features(view: str, encoded: tuple[np.ndarray, ...]) -> np.ndarray:
    if view not in PAIR_VIEWS:
        return encoded[0]
    u, v = encoded
    if view == "cosine":
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
        return (np.sum(u * v, axis=1) / np.maximum(norms, 1e-12))[:, None]
    return np.hstack([u, v, np.abs(u - v), u * v])


def feature_matrix(backbone: "Backbone", task: "TaskSpec", rows: Sequence[dict], view: str = "readout",
                   **kw) -> np.ndarray:
    """Frozen features of ``rows`` in one of `VIEWS`."""
    _check_view(view)
    return _view_features(view, _encode(backbone, task, rows, view, **kw))


def probe_views(task: "TaskSpec", wanted: Sequence[str] = VIEWS) -> list[str]:
    """The views of ``wanted`` that apply to ``task`` (the pair and cosine views need two text fields)."""
    return [v for v in wanted if v not in PAIR_VIEWS or len(task.text_fields) == 2]


def linear_probe(
    backbone: "Backbone",
    task: "TaskSpec",
    *,
    views: Sequence[str] = ("readout",),
    train_limit: int | None = 1000,
    eval_limit: int | None = 500,
    eval_split: str = "validation",
    seed: int = 0,
    c: float = 0.01,
    chat: bool = False,
    source: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> list[ProbeResult]:
    """Fit a logistic regression on frozen features of training rows; score it on ``eval_split``.

    Rows are shuffled with ``seed`` and cut to the limits. One result per view, with the task's own
    metrics (`tpv_core.tasks.metrics`) and the majority-class accuracy beside them.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for v in views:
        _check_view(v)
    if c <= 0:
        raise ValueError(f"the inverse regularisation c must be > 0, got {c}")
    train = shuffled_rows(load_split(task, "train", source=source), train_limit, seed)
    held = shuffled_rows(load_split(task, eval_split, source=source), eval_limit, seed)
    y_train = np.array([task.label_of(r) for r in train])
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"{task.name}: the {len(train)} training rows hold one class only; a probe needs two")
    top = classes[np.argmax(counts)]
    majority = float(np.mean([task.label_of(r) == top for r in held]))
    results = []
    encoded: dict[bool, tuple] = {}  # the pair and cosine views share one encoding of each field
    for view in views:
        source = view in PAIR_VIEWS
        if source not in encoded:
            if progress:
                progress(f"{task.name}: encoding {len(train)} + {len(held)} rows ({view})")
            encoded[source] = tuple(_encode(backbone, task, rows, view, chat=chat) for rows in (train, held))
        x_train, x_held = (_view_features(view, e) for e in encoded[source])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        clf.fit(x_train, y_train)
        preds = [int(p) for p in clf.predict(x_held)]
        results.append(ProbeResult(backbone.name, task.name, view, len(train), eval_split, len(held), majority,
                                   compute_metrics(task, preds, held)))
    return results


def probe_tasks(backbone: "Backbone", tasks: Sequence["TaskSpec"], views: Sequence[str] = VIEWS,
                **kw: Any) -> list[ProbeResult]:
    """`linear_probe` for each task, with the views of ``views`` that apply to it (`probe_views`)."""
    return [r for task in tasks for r in linear_probe(backbone, task, views=probe_views(task, views), **kw)]
