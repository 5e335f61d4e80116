"""The app's training job queue: one job at a time, progress snapshots, cancel, atomic results."""

import dataclasses  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from tpv_core.app.job_bodies import submit_training  # noqa: E402
from tpv_core.app.jobs import CANCELLED, DONE, FAILED, JobQueue  # noqa: E402
from tpv_core.training import TrainConfig  # noqa: E402
from tpv_core.workflows.train import TrainRequest  # noqa: E402


@pytest.fixture
def q():
    queue = JobQueue()
    yield queue
    queue.shutdown()


def test_jobs_run_one_after_another_in_order(q):
    running, overlap, order = [0], [], []
    lock = threading.Lock()

    def work(i):
        def fn(ctx):
            with lock:
                running[0] += 1
                overlap.append(running[0])
            for s in range(3):
                ctx.update(step=s + 1, steps=3)
                time.sleep(0.01)
            with lock:
                running[0] -= 1
            order.append(i)
            return i * 10
        return fn

    ids = [q.submit_callable(work(i), f"job {i}") for i in range(4)]
    assert q.wait_idle(10)
    assert max(overlap) == 1  # never two at once
    assert order == [0, 1, 2, 3]
    snaps = [q.get(i) for i in ids]
    assert [s.state for s in snaps] == [DONE] * 4
    assert [s.result for s in snaps] == [0, 10, 20, 30]
    assert all(s.fraction == 1.0 and s.finished_at >= s.started_at for s in snaps)


def test_cancel_queued_and_running_jobs_and_failures_do_not_stop_the_worker(q):
    started = threading.Event()

    def long(ctx):
        started.set()
        while True:
            ctx.check()
            time.sleep(0.01)

    def boom(ctx):
        raise RuntimeError("no such task")

    a = q.submit_callable(long, "long")
    b = q.submit_callable(lambda ctx: "never", "queued")
    c = q.submit_callable(boom, "fails")
    d = q.submit_callable(lambda ctx: "ok", "after")
    assert started.wait(5)
    snap = q.get(a)
    assert q.cancel(b) and q.get(b).state == CANCELLED  # dropped before it starts
    assert q.cancel(a)
    assert q.wait_idle(10)
    assert q.get(a).state == CANCELLED and q.get(b).result is None
    assert q.get(c).state == FAILED and "no such task" in q.get(c).error
    assert q.get(d).state == DONE and q.get(d).result == "ok"
    assert snap.state == "running"  # snapshots are frozen copies
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = DONE  # type: ignore[misc]
    assert not q.cancel(d)  # finished jobs cannot be cancelled
    assert q.clear_finished() == 4 and q.list() == []


def test_snapshots_are_consistent_while_a_job_reports(q):
    release = threading.Event()

    def fn(ctx):
        for i in range(1, 501):
            ctx.update(step=i, steps=500, loss=1.0 / i)
        release.wait(5)

    job = q.submit_callable(fn, "reporting")
    steps = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        s = q.get(job)
        if s.finished:
            break
        steps.append(s.step)
        assert s.loss is None or s.loss == 1.0 / s.step  # the fields of one update always travel together
        if s.step == 500:
            release.set()
    assert q.get(job).state == DONE
    assert steps == sorted(steps) and steps[-1] == 500


def test_a_training_job_saves_prompts_atomically_and_skips_existing(minilm, tmp_path):
    from tpv_core.store import PromptStore

    q = JobQueue()
    loader = lambda name: minilm  # noqa: E731
    try:
        cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, eval_limit=16)
        spec = TrainRequest("minilm-l6", ("sentences_yelp",), (0, 1), str(tmp_path), cfg, length=4)
        job = submit_training(q, spec, loader)
        final = q.wait(job, timeout=120)
        assert final.state == DONE, final.error
        assert len(final.saved) == 2 and final.item == final.items == 2
        assert final.steps == 3 and final.loss is not None and final.val_score is not None
        df = PromptStore(tmp_path).index()
        assert sorted(df["origin"]) == ["vocab5000-s0-L4", "vocab5000-s1-L4"]
        assert not list(tmp_path.rglob("*.tmp"))  # no temp files left behind
        again = q.wait(submit_training(q, spec, loader), timeout=60)
        assert again.state == DONE and len(again.skipped) == 2 and not again.saved

        # cancelling a running training job stops between steps and saves nothing
        long = dataclasses.replace(spec, seeds=(5,), config=TrainConfig(steps=10_000, batch_size=8, eval_every=None,
                                                                        eval_limit=16))
        job = submit_training(q, long, loader)
        t0 = time.monotonic()
        while q.get(job).step < 2 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert q.cancel(job)
        assert q.wait(job, timeout=30).state == CANCELLED
        assert not PromptStore(tmp_path).exists("minilm-l6", "sentences_yelp", "vocab5000-s5-L4")
    finally:
        q.shutdown()


def test_bad_requests_are_refused():
    q = JobQueue()
    try:
        with pytest.raises(ValueError, match="task"):
            submit_training(q, TrainRequest("minilm-l6", (), (0,), "/tmp/x", TrainConfig()), lambda n: None)
        with pytest.raises(ValueError, match="seed"):
            submit_training(q, TrainRequest("minilm-l6", ("sst2",), (), "/tmp/x", TrainConfig()), lambda n: None)
        with pytest.raises(ValueError, match="exclude"):
            submit_training(q, TrainRequest("minilm-l6", ("sst2",), (0,), "/tmp/x", TrainConfig(), force=True,
                                            resume=True), lambda n: None)
        assert q.list() == []
    finally:
        q.shutdown()
