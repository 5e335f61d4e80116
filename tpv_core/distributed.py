"""Data-parallel set-up under ``torchrun`` / ``accelerate launch``, in one place.

The order matters and is fixed here (:func:`setup`):

1. read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the launcher's environment;
2. pick this process's device: ``cuda:LOCAL_RANK`` (and ``torch.cuda.set_device``) on GPUs, the CPU
   otherwise, so that N ranks on one machine use N GPUs instead of all loading onto cuda:0;
3. start the process group *before* any model loads: NCCL on CUDA (with ``device_id`` so NCCL binds
   its communicator to that GPU at once), gloo on CPU;
4. the caller loads its model onto :attr:`DistContext.device`, trains (gradients and token counts are
   summed across ranks), evaluates a shard of every split per rank (:func:`gather_objects` puts the
   predictions back together), and writes files and prints on rank 0 only (:func:`is_main`);
5. :func:`shutdown`: a barrier, so no rank exits while another is still writing, then
   ``destroy_process_group``.

Outside a launcher (``WORLD_SIZE`` unset or 1) every function here is a cheap no-op for one process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # "nccl" | "gloo" | None (one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launcher_env(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher set them (0, 1, 0 without a launcher)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", env.get("LOCAL_PROCESS_RANK", str(rank))))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e}); launch with torchrun") from e
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def rank_device(preference: str | None, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank``: ``cuda:LOCAL_RANK`` when CUDA is used, else the CPU.

    ``preference``: None / "auto" (CUDA when present), "cpu", "cuda". An explicit index ("cuda:1") is an
    error under a launcher: each rank's GPU comes from LOCAL_RANK (use CUDA_VISIBLE_DEVICES to choose GPUs).
    """
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(pref)
    if dev.type != "cuda":
        return dev
    if dev.index is not None:
        raise ValueError(f"--device {preference} names one GPU, but under torchrun every rank takes the GPU of "
                         f"its LOCAL_RANK; pass --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available here; use --device cpu")
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise ValueError(f"LOCAL_RANK={local_rank} but this machine shows only {n} GPU(s); start at most {n} "
                         f"processes per node (torchrun --nproc_per_node {n})")
    return torch.device("cuda", local_rank)


def setup(preference: str | None = None, *, timeout_s: float = 1800.0) -> DistContext:
    """Start data parallelism if a launcher asked for it, in the right order (see the module docstring).

    Returns the context with the device this process must load its model on. Safe to call again: an
    already started process group is reused."""
    rank, world, local = launcher_env()
    if world == 1 and not dist.is_initialized():
        from tpv_core.device import pick_device

        return DistContext(device=pick_device(preference))
    device = rank_device(preference, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, device, dist.get_backend())


def current() -> DistContext:
    """This process's context without starting anything (one process unless a group is running)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    backend = dist.get_backend()
    _, _, local = launcher_env()
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, backend)


def ensure_for(device: torch.device) -> DistContext:
    """The running context, starting the process group for a model already on ``device`` when a launcher
    asked for one (library use: ``tune_prompt`` under torchrun without the CLI). The CLI calls
    :func:`setup` before loading instead, which is the order to prefer."""
    rank, world, local = launcher_env()
    if world > 1 and not dist.is_initialized():
        device = torch.device(device)
        if device.type == "cuda" and device.index not in (None, local):
            log.warning("rank %d (LOCAL_RANK=%d) holds its model on %s; call tpv_core.distributed.setup() "
                        "before loading so each rank uses its own GPU", rank, local, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return current()


def is_main() -> bool:
    """True on rank 0 (and in a plain single process): the one that writes files and prints."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Barrier, then tear the process group down (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        try:
            barrier()
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def launched(preference: str | None = None) -> Iterator[DistContext]:
    """``with launched(args.device) as ctx:`` set up, run, and always shut down."""
    ctx = setup(preference)
    try:
        yield ctx
    finally:
        if ctx.distributed:
            shutdown()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (asynchronous on GPUs: no host sync); returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items (the first n % world ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order (``[obj]`` for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def concat_shards(parts: Sequence[Sequence[T]]) -> list[T]:
    return [x for p in parts for x in p]
