"""Score a soft prompt (or no prompt) on a task split.

Rank classification by default: the backbone scores every label's verbaliser (or description, for
encoders) and the best one is the prediction. ``method="generate"`` is the paper's way for decoder and
seq2seq models: greedy generation, then whole-string exact match against the verbalisers (a text that
is no label counts as wrong).

:func:`iter_evaluate` yields a running estimate after every batch (``partial=True``, with the count
so far) and ends with the full result, so a UI can show an estimate within seconds; examples are
visited in a fixed shuffled order so the running estimate is not biased by file order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch

from tpv_core.finite import require_finite
from tpv_core.tasks import compute_metrics, load_split, text_to_label
from tpv_core.tasks.data import shuffled_rows

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone
    from tpv_core.tasks import TaskSpec

METHODS = ("rank", "generate")


@dataclass
class PreparedSplit:
    """Rows of a split, tokenized once for one backbone (reuse it across many prompts)."""

    task: "TaskSpec"
    backbone_name: str
    split: str
    rows: list[dict]
    ids: list[list[int]]
    targets: list[int]
    chat: bool = False

    def __len__(self) -> int:
        return len(self.rows)


def prepare_split(
    backbone: "Backbone",
    task: "TaskSpec",
    split: str = "validation",
    *,
    rows: Sequence[dict] | None = None,
    limit: int | None = None,
    shuffle_seed: int | None = 0,
    chat: bool = False,
    source: str = "auto",
) -> PreparedSplit:
    """Load (unless ``rows`` given), optionally shuffle and cut to ``limit``, and tokenize a split."""
    rows = shuffled_rows(rows if rows is not None else load_split(task, split, source=source), limit, shuffle_seed)
    if not rows:
        raise ValueError(f"no rows to evaluate for {task.name}/{split}")
    texts = [backbone.format(task, r) for r in rows]
    ids = backbone.tokenize(texts, chat=chat)
    targets = [task.label_of(r) for r in rows]
    return PreparedSplit(task, backbone.name, split, rows, ids, targets, chat)


@dataclass
class EvalResult:
    task: str
    split: str
    n: int
    total: int
    metrics: dict[str, float]
    partial: bool
    method: str = "rank"
    predictions: list[int] = field(default_factory=list, repr=False)
    invalid: int = 0  # generated texts that are no label (generate method)

    @property
    def main(self) -> float:
        """The first metric of the task (its headline number)."""
        return next(iter(self.metrics.values()), float("nan"))

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "n": self.n, "total": self.total, "method": self.method,
                "partial": self.partial, "invalid": self.invalid, **self.metrics}


def _metrics(task: "TaskSpec", preds: list[int], rows: Sequence[dict]) -> dict[str, float]:
    return compute_metrics(task, preds, rows[: len(preds)])


FIRST_BATCH = 8  # rows in the first batch of iter_evaluate: the first running estimate (benchmarks section 4)


def _batch_bounds(total: int, first: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of a first batch of ``first`` rows, then batches of ``size``."""
    start = 0
    while start < total:
        stop = min(total, start + (first if start == 0 else size))
        yield start, stop
        start = stop


def iter_evaluate(
    backbone: "Backbone",
    task: "TaskSpec",
    prompt: torch.Tensor | None,
    prepared: PreparedSplit | None = None,
    *,
    split: str = "validation",
    limit: int | None = None,
    batch_size: int = 32,
    method: str = "rank",
    max_new_tokens: int = 8,
    max_length: int | None = 512,
    cancel: Callable[[], bool] | None = None,
    first_batch_size: int | None = FIRST_BATCH,
) -> Iterator[EvalResult]:
    """Evaluate batch by batch; every yield carries metrics over the examples seen so far.

    The first batch holds only ``first_batch_size`` rows (default 8, None = ``batch_size``) so that a
    running estimate arrives within about a second even on a slow backbone; the rest go in ``batch_size``."""
    if method not in METHODS:
        raise ValueError(f"unknown evaluation method {method!r}; one of {', '.join(METHODS)}")
    if prompt is not None:
        require_finite(prompt, f"the prompt to evaluate on {task.name}")
    if method == "generate" and backbone.family == "encoder":
        raise ValueError(f"{backbone.name} is an encoder: it cannot generate; use method='rank'")
    if prepared is None:
        prepared = prepare_split(backbone, task, split, limit=limit)
    elif prepared.backbone_name != backbone.name:
        raise ValueError(f"split was prepared for {prepared.backbone_name}, not {backbone.name}")
    labels = task.label_set()
    p = None if prompt is None else prompt.detach().float().to(backbone.device)
    preds: list[int] = []
    invalid = 0
    total = len(prepared)
    first = min(first_batch_size or batch_size, batch_size)
    for start, stop in _batch_bounds(total, first, batch_size):
        if cancel is not None and cancel():
            return
        batch = backbone.collate(prepared.ids[start:stop], max_length=max_length)
        with torch.no_grad():
            if method == "rank":
                scores = backbone.label_scores(batch, p, labels)
                preds.extend(scores.argmax(dim=-1).tolist())
            else:
                for text in backbone.generate(batch, p, max_new_tokens=max_new_tokens):
                    label = text_to_label(task, text)
                    invalid += label is None
                    preds.append(-1 if label is None else label)
        done = len(preds)
        yield EvalResult(task.name, prepared.split, done, total, _metrics(task, preds, prepared.rows),
                         partial=done < total, method=method, predictions=preds[:], invalid=invalid)


def evaluate(
    backbone: "Backbone",
    task: "TaskSpec",
    prompt: torch.Tensor | None,
    prepared: PreparedSplit | None = None,
    **kwargs: Any,
) -> EvalResult:
    """Evaluate to the end and return the final result."""
    result = None
    for result in iter_evaluate(backbone, task, prompt, prepared, **kwargs):
        pass
    if result is None:
        raise RuntimeError("evaluation was cancelled before the first batch")
    return result


def interleaved_evaluation(
    backbone: "Backbone",
    prompt: torch.Tensor | None,
    prepared: Mapping[str, PreparedSplit],
    *,
    batch_size: int = 32,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[tuple[str, EvalResult]]:
    """Evaluate ``prompt`` on several tasks, one batch of each in turn, yielding ``(task, running
    result)`` after every batch: every task gets an estimate after its first batch, then they all
    refine to the full split (the app's live Combine scores)."""
    iters = {name: iter_evaluate(backbone, p.task, prompt, p, batch_size=batch_size, cancel=cancel)
             for name, p in prepared.items()}
    while iters:
        for name in list(iters):
            try:
                yield name, next(iters[name])
            except StopIteration:
                del iters[name]
