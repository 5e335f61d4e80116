"""Executors only schedule: ``submit(spec)`` returns a handle, ``wait(handles)`` the ones that finished.

* `LocalExecutor`: worker processes on this machine (spawned, so CUDA works in them): one per GPU when
  there are GPUs, else one per ``num_cpus`` cores a job asks for.
* `RayExecutor`: each job a Ray task with the plan's ``num_cpus`` / ``num_gpus``; the result (the
  prompt file's bytes) travels back through Ray's object store, so workers need no shared filesystem.
  ``address=None`` starts a local Ray; ``"auto"`` joins the running cluster; ``"ray://HOST:PORT"`` a
  remote one. A Ray that is already initialised (a test, a notebook) is used as it is and left running.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any, Callable

JobFn = Callable[[dict[str, Any]], dict[str, Any]]
Done = tuple[Any, bool, Any]  # (handle, ok, result dict or error text)

_worker_device: str | None = None


def _init_worker(devices: Any, threads: int) -> None:
    global _worker_device  # one value per worker process, set once at its start
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        _worker_device = devices.get_nowait() if devices is not None else None
    except Exception:
        _worker_device = None


def _call(fn: JobFn, spec: dict[str, Any]) -> dict[str, Any]:
    if _worker_device is not None and spec.get("device") is None:
        spec = {**spec, "device": _worker_device}
    return fn(spec)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    cause = getattr(exc, "cause", None)  # Ray wraps the worker's exception
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause).strip()[:500]}"
    return f"{type(exc).__name__}: {' '.join(text)[:500]}"


class LocalExecutor:
    name = "local"

    def __init__(self, fn: JobFn | None = None, workers: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0):
        from tpv_core.grid.worker import run_job

        self.fn = fn or run_job
        import torch

        gpus = torch.cuda.device_count() if num_gpus else 0
        cpus = os.cpu_count() or 1
        self.workers = workers or (gpus if gpus else max(1, int(cpus // max(num_cpus, 1))))
        self.threads = max(1, cpus // self.workers)
        ctx = mp.get_context("spawn")
        devices = None
        if gpus:
            devices = ctx.Queue()
            for i in range(self.workers):
                devices.put(f"cuda:{i % gpus}")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(devices, self.threads))

    def describe(self) -> str:
        return f"local: {self.workers} worker processes x {self.threads} threads"

    def submit(self, spec: dict[str, Any]) -> Future:
        return self.pool.submit(_call, self.fn, {**spec, "threads": spec.get("threads") or self.threads})

    def wait(self, handles: list[Future]) -> list[Done]:
        done, _ = futures_wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            exc = f.exception()
            out.append((f, exc is None, f.result() if exc is None else _error_text(exc)))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    name = "ray"

    def __init__(self, fn: JobFn | None = None, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0):
        try:
            import ray
        except ImportError:
            raise ImportError("the Ray executor needs Ray: pip install -e '.[ray]' (ray==2.60.0)") from None
        from tpv_core.grid.worker import run_job

        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kw["address"] = address
            try:
                ray.init(**kw)
            except ConnectionError as e:
                raise RuntimeError(f"cannot reach a Ray cluster at {address!r} ({e}); start one with `ray start --head` "
                                   f"or leave --address out to start a local Ray") from None
            self.started = True
        self.remote = ray.remote(max_retries=0)(fn or run_job).options(num_cpus=num_cpus, num_gpus=num_gpus)

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        return f"ray: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"

    def submit(self, spec: dict[str, Any]) -> Any:
        return self.remote.remote(spec)

    def wait(self, handles: list[Any]) -> list[Done]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, True, self.ray.get(ref)))
            except Exception as e:  # RayTaskError, worker died, ...
                out.append((ref, False, _error_text(e)))
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(kind: str, fn: JobFn | None = None, *, address: str | None = None, workers: int | None = None,
                  num_cpus: float = 1.0, num_gpus: float = 0.0):
    if kind == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(fn, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus)
    if kind == "ray":
        return RayExecutor(fn, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    raise ValueError(f"unknown executor {kind!r}; local or ray")
