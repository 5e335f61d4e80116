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

import dataclasses
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch

from tpv_core import distributed
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
    order: list[int] = field(default_factory=list, repr=False)  # row index of each prediction (partial: scoring order)

    def scored_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The rows of ``predictions``, in the same order (``rows`` = the prepared split's rows)."""
        return [rows[i] for i in self.order] if self.order else list(rows[: self.n])

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


SORT_SPAN_BATCHES = 4  # batches whose rows are sorted by length together (less padding, estimate stays unbiased)


def batch_plan(lengths: Sequence[int], first: int, size: int, span_batches: int = SORT_SPAN_BATCHES
               ) -> list[list[int]]:
    """Row indices per evaluation batch: the first batch of ``first`` rows in the split's (shuffled) order,
    then spans of ``span_batches`` batches, each span sorted by token length and cut into batches of
    ``size`` (rows of similar length share a batch, so little padding is computed). A span is a random
    sample of the shuffled split, so the running estimate after every span stays unbiased; at most
    ``span_batches`` batches are reordered at a time."""
    total = len(lengths)
    batches: list[list[int]] = []
    start = min(first, total)
    if start:
        batches.append(list(range(start)))
    span = max(size * max(span_batches, 1), 1)
    while start < total:
        rows = sorted(range(start, min(total, start + span)), key=lambda i: lengths[i])
        batches += [rows[j : j + size] for j in range(0, len(rows), size)]
        start += span
    return batches


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (default 95%): honest for small n and for 0 or n hits."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def metric_interval(task: "TaskSpec", predictions: Sequence[int], rows: Sequence[dict], metric: str | None = None,
                    *, n_boot: int = 200, seed: int = 0, z: float = 1.96) -> tuple[float, float]:
    """A 95% interval of a task's (main) metric over the rows scored so far: Wilson for accuracy, a
    percentile bootstrap (``n_boot`` resamples of the rows) for any other metric (F1, Pearson, ...)."""
    import numpy as np

    n = len(predictions)
    metric = metric or (task.metrics[0] if task.metrics else "accuracy")
    if n == 0:
        return float("nan"), float("nan")
    if metric == "accuracy":
        correct = sum(int(p == task.label_of(r)) for p, r in zip(predictions, rows, strict=False))
        return wilson_interval(correct, n, z)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        got = compute_metrics(task, [predictions[i] for i in idx], [rows[i] for i in idx]).get(metric)
        if got is not None and got == got:
            vals.append(float(got))
    if not vals:
        return float("nan"), float("nan")
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


class ScoreCache:
    """Scores of stored prompts on task splits, kept on disk (one JSON file, written atomically) so a
    single-task comparison is shown at once in a later session. Keys name the file version (path,
    mtime, size), backbone, task, split, row limit and method: a changed prompt is scored again."""

    def __init__(self, path: str | Path | None = None):
        from tpv_core.paths import cache_dir

        self.path = Path(path) if path is not None else cache_dir() / "scores.json"
        self._data: dict[str, dict] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(*, backbone: str, prompt_path: str | Path, task: str, split: str, limit: int | None,
            method: str = "rank") -> str:
        st = os.stat(prompt_path)
        return json.dumps([backbone, str(Path(prompt_path).resolve()), st.st_mtime_ns, st.st_size, task, split,
                           limit, method])

    def _load(self) -> dict[str, dict]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text())
                self._data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, value: dict) -> None:
        clean = {k: float(v) for k, v in value.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        with self._lock:
            data = self._load()
            data[key] = clean
            from tpv_core.atomic import atomic_write_text

            atomic_write_text(self.path, json.dumps(data))


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
    seen: list[int] = []  # row indices in the order they were scored (length-sorted within spans)
    invalid = 0
    total = len(prepared)
    first = min(first_batch_size or batch_size, batch_size)
    for idx in batch_plan([len(i) for i in prepared.ids], first, batch_size):
        if cancel is not None and cancel():
            return
        with backbone.forward_slot(f"evaluation of {task.name} (batch of {len(idx)} rows)"), torch.no_grad():
            batch = backbone.collate([prepared.ids[i] for i in idx], max_length=max_length)
            if method == "rank":
                scores = backbone.label_scores(batch, p, labels)
                preds.extend(scores.argmax(dim=-1).tolist())
            else:
                for text in backbone.generate(batch, p, max_new_tokens=max_new_tokens):
                    label = text_to_label(task, text)
                    invalid += label is None
                    preds.append(-1 if label is None else label)
        seen.extend(idx)
        done = len(preds)
        rows = [prepared.rows[i] for i in seen]
        if done < total:
            ordered, order = preds[:], seen[:]
        else:
            ordered, order = [p for _, p in sorted(zip(seen, preds, strict=True))], list(range(total))
        yield EvalResult(task.name, prepared.split, done, total, _metrics(task, preds, rows),
                         partial=done < total, method=method, predictions=ordered, invalid=invalid, order=order)


def _shard(prepared: PreparedSplit, start: int, stop: int) -> PreparedSplit:
    return dataclasses.replace(prepared, rows=prepared.rows[start:stop], ids=prepared.ids[start:stop],
                               targets=prepared.targets[start:stop])


def evaluate(
    backbone: "Backbone",
    task: "TaskSpec",
    prompt: torch.Tensor | None,
    prepared: PreparedSplit | None = None,
    *,
    shard: bool | None = None,
    **kwargs: Any,
) -> EvalResult:
    """Evaluate to the end and return the final result.

    Under data parallelism (a running process group, ``shard`` None or True) each rank scores its own
    contiguous share of the rows and the predictions are gathered, so every rank returns the same result
    over all rows in the time of 1/N of them; every rank must call it with the same split (as every rank
    of a torchrun job does). ``shard=False`` scores every row on this rank."""
    world = distributed.world_size()
    if world > 1 and shard is not False:
        from tpv_core.distributed import concat_shards, gather_objects, shard_bounds

        rank = torch.distributed.get_rank()
        if prepared is None:
            prepared = prepare_split(backbone, task, kwargs.pop("split", "validation"), limit=kwargs.pop("limit", None))
        start, stop = shard_bounds(len(prepared), rank, world)
        mine = evaluate(backbone, task, prompt, _shard(prepared, start, stop), shard=False,
                        **kwargs) if stop > start else None
        parts = gather_objects(([] if mine is None else mine.predictions, 0 if mine is None else mine.invalid))
        preds = concat_shards([p for p, _ in parts])
        invalid = sum(i for _, i in parts)
        # each finished shard returns its predictions in row order, so the concatenation is in row order
        return EvalResult(task.name, prepared.split, len(preds), len(prepared),
                          _metrics(task, preds, prepared.rows[: len(preds)]), partial=len(preds) < len(prepared),
                          method=kwargs.get("method", "rank"), predictions=preds, invalid=invalid,
                          order=list(range(len(preds))))
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
