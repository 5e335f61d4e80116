"""A background job queue for the app: one worker thread runs jobs one after another.

A job is a callable that reports through a :class:`JobContext`; the bodies that run a workflow (training
into a store, a few-shot experiment) are in :mod:`tpv_core.app.job_bodies`.

Only one job runs at a time: on a 2-core machine two trainings side by side would each run at half
speed and fight over the cores, so the queue runs them in turn. :meth:`JobQueue.list` and
:meth:`JobQueue.get` return frozen snapshots (copies made under a lock), safe to read from any thread.
Cancelling sets the job's :class:`threading.Event`; a queued job is dropped, a running one stops
between training steps (the prompt being tuned is not saved; prompts finished earlier stay saved).

The module knows nothing of Streamlit: the app keeps one queue per process with ``st.cache_resource``
so jobs survive page switches and reruns.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)

BackboneLoader = Callable[[str], "Backbone"]


class JobCancelled(Exception):
    """Raised inside a job (by :meth:`JobContext.check`) to stop it at a safe point."""


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job; never changes after it is handed out."""

    id: int
    kind: str
    label: str
    state: str
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    item: int = 0  # items finished (a training item = one (task, origin) prompt)
    items: int = 1
    current: str = ""  # what runs now, e.g. "sst2 / vocab5000-s0-L20"
    step: int = 0
    steps: int = 0
    loss: float | None = None
    val_score: float | None = None
    best_score: float | None = None
    eta_s: float | None = None  # time left in the current item
    message: str = ""
    error: str | None = None
    saved: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    result: Any = field(default=None, compare=False, repr=False)
    # live curves: one (item, step, loss, val_score or None) point per training step, every item of the job
    history: tuple[tuple[str, int, float, float | None], ...] = field(default=(), compare=False, repr=False)
    phase: str = ""  # set-up before the first step: "loading model", "preparing ..." ("" while training)
    phase_fraction: float = 0.0  # how far the set-up phases of the current item are, in [0, 1]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] (items done plus the running item's share)."""
        if self.state == DONE:
            return 1.0
        part = self.step / self.steps if self.steps else 0.0
        return max(0.0, min(1.0, (self.item + part) / max(self.items, 1)))

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @property
    def eta_total_s(self) -> float | None:
        """Time left for the whole job: the running item's ETA plus the items still to come at the
        mean pace so far (None until one step has run)."""
        if self.state != RUNNING or self.eta_s is None:
            return None
        left_items = max(self.items - self.item - 1, 0)
        if not left_items:
            return self.eta_s
        per_item = self.elapsed_s / max(self.item + (self.step / self.steps if self.steps else 0), 1e-9)
        return self.eta_s + left_items * per_item


class JobContext:
    """What a running job sees: its cancel flag and a way to report progress."""

    def __init__(self, job: "_Job", lock: threading.Lock):
        self._job, self._lock = job, lock

    def cancelled(self) -> bool:
        return self._job.cancel.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled."""
        if self.cancelled():
            raise JobCancelled()

    def update(self, **fields: Any) -> None:
        """Set status fields (``step``, ``steps``, ``loss``, ``message``, ...); thread-safe."""
        with self._lock:
            self._job.status = dataclasses.replace(self._job.status, **fields)

    def add_saved(self, path: str) -> None:
        with self._lock:
            s = self._job.status
            self._job.status = dataclasses.replace(s, saved=(*s.saved, str(path)))

    def add_point(self, item: str, step: int, loss: float, val: float | None) -> None:
        """Append one training step to the job's curve (``history``)."""
        with self._lock:
            s = self._job.status
            self._job.status = dataclasses.replace(s, history=(*s.history, (item, int(step), float(loss), val)))

    def add_skipped(self, what: str) -> None:
        with self._lock:
            s = self._job.status
            self._job.status = dataclasses.replace(s, skipped=(*s.skipped, what))


@dataclass
class _Job:
    status: JobStatus
    fn: Callable[[JobContext], Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class JobQueue:
    """Jobs run one at a time, in submission order, on one daemon worker thread."""

    def __init__(self, *, keep_finished: int = 50):
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._pending: "queue.Queue[int | None]" = queue.Queue()
        self._ids = itertools.count(1)
        self._keep = keep_finished
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="tpv-job-worker", daemon=True)
        self._worker.start()

    # --- submitting ---------------------------------------------------------------------------
    def submit_callable(self, fn: Callable[[JobContext], Any], label: str, *, kind: str = "task",
                        items: int = 1) -> int:
        """Queue ``fn(ctx)``; its return value becomes the snapshot's ``result``."""
        if self._stop:
            raise RuntimeError("the job queue is shut down")
        with self._lock:
            job_id = next(self._ids)
            status = JobStatus(job_id, kind, label, QUEUED, time.time(), items=max(int(items), 1))
            self._jobs[job_id] = _Job(status, fn)
            self._idle.clear()
            self._prune()
        self._pending.put(job_id)
        return job_id

    # --- reading ------------------------------------------------------------------------------
    def list(self) -> list[JobStatus]:
        """Snapshots of all known jobs, oldest first."""
        with self._lock:
            return [j.status for j in self._jobs.values()]

    def get(self, job_id: int) -> JobStatus:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job {job_id}")
            return self._jobs[job_id].status

    def active(self) -> list[JobStatus]:
        return [s for s in self.list() if not s.finished]

    # --- control ------------------------------------------------------------------------------
    def cancel(self, job_id: int) -> bool:
        """Ask a job to stop; True when it was queued or running."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status.finished:
                return False
            job.cancel.set()
            if job.status.state == QUEUED:
                job.status = dataclasses.replace(job.status, state=CANCELLED, finished_at=time.time(),
                                                 message="cancelled before it started")
            return True

    def clear_finished(self) -> int:
        with self._lock:
            gone = [i for i, j in self._jobs.items() if j.status.finished]
            for i in gone:
                del self._jobs[i]
            return len(gone)

    def wait(self, job_id: int, timeout: float | None = None, poll: float = 0.05) -> JobStatus:
        """Block until the job has finished (or ``timeout`` seconds passed); its last snapshot."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get(job_id)
            if status.finished or (end is not None and time.monotonic() >= end):
                return status
            time.sleep(poll)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def shutdown(self, cancel: bool = True, timeout: float | None = 10) -> None:
        """Stop the worker (cancelling queued and running jobs unless ``cancel=False``)."""
        self._stop = True
        if cancel:
            for s in self.active():
                self.cancel(s.id)
        self._pending.put(None)
        self._worker.join(timeout)

    # --- the worker ---------------------------------------------------------------------------
    def _prune(self) -> None:
        finished = [i for i, j in self._jobs.items() if j.status.finished]
        for i in finished[: max(len(finished) - self._keep, 0)]:
            del self._jobs[i]

    def _run(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.status.state != QUEUED:
                    self._mark_idle_locked()
                    continue
                job.status = dataclasses.replace(job.status, state=RUNNING, started_at=time.time())
            ctx = JobContext(job, self._lock)
            state, error, result, message = DONE, None, None, None
            try:
                result = job.fn(ctx)
                if job.cancel.is_set():
                    state = CANCELLED
            except JobCancelled:
                state = CANCELLED
            except Exception as exc:  # a failed job must not kill the worker
                from tpv_core.app.appstate import describe_failure

                state, error = FAILED, describe_failure(exc)  # out-of-memory: what to do, memory released
                message = traceback.format_exc(limit=4)
            with self._lock:
                s = job.status
                job.status = dataclasses.replace(
                    s, state=state, finished_at=time.time(), error=error, result=result,
                    eta_s=None, message=message or s.message or ("cancelled" if state == CANCELLED else ""),
                )
                self._mark_idle_locked()

    def _mark_idle_locked(self) -> None:
        if not any(not j.status.finished for j in self._jobs.values()) and self._pending.empty():
            self._idle.set()
