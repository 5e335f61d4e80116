"""Core pieces behind the app's UX: length-sorted evaluation batches, estimate intervals, the on-disk score
cache."""

import math

import pytest

from tpv_core.evaluation import ScoreCache, batch_plan, metric_interval, wilson_interval


def test_batch_plan_sorts_within_spans_and_covers_every_row_once():
    lengths = [10, 3, 7, 1, 9, 2, 8, 4, 6, 5, 11, 0]
    plan = batch_plan(lengths, first=2, size=2, span_batches=2)
    assert plan[0] == [0, 1]  # the first estimate: the split's own (shuffled) order
    flat = [i for b in plan for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert plan[1:3] == [[3, 5], [2, 4]]  # rows 2..5 sorted by length, cut into batches of 2
    assert all(len(b) <= 2 for b in plan)


def test_wilson_and_bootstrap_intervals():
    lo, hi = wilson_interval(6, 8)
    assert 0.4 < lo < 0.75 < hi < 0.97
    assert wilson_interval(0, 8)[0] == 0.0 and wilson_interval(8, 8)[1] == 1.0
    lo_small, hi_small = wilson_interval(4, 8)
    lo_big, hi_big = wilson_interval(250, 500)
    assert hi_small - lo_small > 3 * (hi_big - lo_big)  # few rows: a wide interval

    class Task:
        metrics = ("pearson",)
        name = "sts"

    import tpv_core.evaluation as ev

    rows = [{"label": float(i % 5)} for i in range(40)]
    preds = [i % 5 for i in range(40)]
    orig = ev.compute_metrics
    try:
        ev.compute_metrics = lambda task, p, r: {"pearson": sum(a == b["label"] for a, b in zip(p, r)) / len(p)}
        lo, hi = metric_interval(Task(), preds, rows, n_boot=50)
    finally:
        ev.compute_metrics = orig
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert all(math.isnan(v) for v in metric_interval(Task(), [], [], n_boot=5))


def test_score_cache_persists_and_follows_the_file_version(tmp_path):
    prompt = tmp_path / "p.safetensors"
    prompt.write_bytes(b"one")
    cache = ScoreCache(tmp_path / "scores.json")
    key = cache.key(backbone="m", prompt_path=prompt, task="sst2", split="validation", limit=None)
    assert cache.get(key) is None
    cache.put(key, {"main": 0.75, "n": 500, "accuracy": 0.75, "bad": float("nan")})
    again = ScoreCache(tmp_path / "scores.json")  # a new process
    assert again.get(key) == {"main": 0.75, "n": 500.0, "accuracy": 0.75}
    prompt.write_bytes(b"changed!")  # a retrained prompt is scored again
    assert again.get(again.key(backbone="m", prompt_path=prompt, task="sst2", split="validation", limit=None)) is None
    assert not list(tmp_path.glob(".*tmp"))
