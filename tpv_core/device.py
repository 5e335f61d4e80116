"""Device and precision choices made at run time (CPU with or without bf16, CUDA when present)."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(preference: str | None = None) -> torch.device:
    """The device to run on: CUDA when present unless ``preference`` says otherwise.

    ``preference``: None / "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", "mps", ...
    """
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError as e:
        raise ValueError(f"unknown device {preference!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {preference!r} requested but CUDA is not available here; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {preference!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {preference!r} requested but MPS is not available here; use device='cpu'")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (AVX512-BF16 or AMX-BF16), where bf16 autocast pays off."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            flags = set(line.split(":", 1)[-1].split())
            if {"avx512_bf16", "amx_bf16"} & flags:
                return True
    try:  # /proc/cpuinfo missing or silent: ask torch (reports e.g. "AVX512" / "AVX512_BF16" on some builds)
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
        return "BF16" in cap or "AMX" in cap
    except Exception:  # pragma: no cover - very old torch
        return False


@dataclass(frozen=True)
class PrecisionPlan:
    """How the frozen model is held and run. The soft prompt and its optimizer state are fp32 in every plan.

    ``weights``: the dtype the weights are loaded in (straight onto the device). ``compute``: the autocast
    dtype (None: plain fp32). ``loss_scaling``: fp16 needs a gradient scaler (its gradients underflow)."""

    weights: torch.dtype
    compute: torch.dtype | None
    loss_scaling: bool = False

    @property
    def name(self) -> str:
        w = str(self.weights).replace("torch.", "")
        c = "fp32" if self.compute is None else str(self.compute).replace("torch.", "")
        return f"weights={w} compute={c}" + (" +loss-scaling" if self.loss_scaling else "")


def cuda_native_bf16(device: torch.device | str) -> bool:
    """Whether the GPU ``device`` (its own index, not the current device) runs bf16 natively: compute
    capability 8.0 (Ampere) or newer. Emulated bf16 (V100, T4: what ``torch.cuda.is_bf16_supported()`` counts
    by default) is slower than fp16 there and does not count."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def plan_precision(device: torch.device | str, precision: str = "auto") -> PrecisionPlan:
    """The precision plan for a backbone on ``device`` (the backbone's own device, e.g. cuda:3).

    CUDA: "auto" = bf16 weights and bf16 autocast where bf16 is native, else fp16 weights with autocast and a
    loss scaler; "bf16" / "fp16" force those; "fp32" = fp32 weights, no autocast (TF32 matmuls on Ampere+).
    CPU (what benchmarks/README.md chose): fp32 weights with bf16 autocast where the CPU has AVX512-BF16/AMX
    ("auto") or on request ("bf16"), plain fp32 otherwise; fp16 is refused (no fast fp16 on CPUs).
    Other devices (mps, lazy): fp32 weights, bf16 autocast only on request.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    dev = torch.device(device)
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    if precision == "fp32":
        return PrecisionPlan(f32, None)
    if dev.type == "cuda":
        native = cuda_native_bf16(dev)
        if precision == "bf16" or (precision == "auto" and native):
            if not native:
                log.warning("bf16 requested on %s, which has no native bf16 (compute capability < 8.0): it "
                            "will be emulated and slow; --precision fp16 is the fast choice there", dev)
            return PrecisionPlan(bf16, bf16)
        return PrecisionPlan(f16, f16, loss_scaling=True)
    if precision == "fp16":
        raise ValueError(f"precision fp16 is for GPUs without bf16, not for {dev.type}; use bf16 or fp32")
    if dev.type == "cpu":
        if precision == "bf16":
            if not cpu_supports_bf16():
                log.warning("bf16 requested on a CPU without native bf16 support: this will be slower than fp32")
            return PrecisionPlan(f32, bf16)
        return PrecisionPlan(f32, bf16 if cpu_supports_bf16() else None)
    return PrecisionPlan(f32, bf16 if precision == "bf16" else None)


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for the frozen model on ``device`` (see :func:`plan_precision`), None = fp32."""
    return plan_precision(device, precision).compute


def enable_tf32(device: torch.device | str) -> bool:
    """Allow TF32 for fp32 matmuls and convolutions on Ampere or newer (what the remaining fp32 work, e.g.
    --precision fp32, should use on those GPUs). Returns whether it was enabled."""
    if not cuda_native_bf16(device):  # same threshold: compute capability 8.0
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


# rows per process in a training batch when the user gives none: 8 is what a 2-core CPU learns fastest with
# (README's table); a GPU step on 8 rows leaves most of the GPU idle, so GPUs take 32, the paper's
# per_device_train_batch_size (kinit-sk/task-prompt-vectors, configs/prompt_tuning.toml)
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}


def default_batch_size(device: torch.device | str) -> int:
    return DEFAULT_BATCH.get(torch.device(device).type, 8)


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# ---- device memory: out-of-memory turned into advice, memory given back ------------------------------------
class DeviceMemoryError(RuntimeError):
    """The device ran out of memory; the message says what to do. The memory of the failed call is released."""


def release_memory(device: torch.device | str | None = None) -> None:
    """Drop unreferenced tensors and return the CUDA caching allocator's free blocks to the driver."""
    import gc

    gc.collect()
    dev = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA / MPS / CPU allocator out-of-memory error (by type, or by the message of older backends)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and ("out of memory" in str(exc).lower()
                                                             or isinstance(exc, MemoryError))


def memory_advice(device: torch.device | str, what: str = "this run") -> str:
    dev = torch.device(device)
    where = f"GPU memory on {dev}" if dev.type == "cuda" else f"memory on {dev}"
    return (f"out of {where} during {what}. Try fewer rows (a smaller evaluation limit), a smaller batch "
            f"(--batch-size, or the batch setting), --gradient-checkpointing for training, or a smaller backbone; "
            f"close other jobs that use the same device. The memory of the failed call was released.")


@contextlib.contextmanager
def oom_guard(device: torch.device | str, what: str = "this run"):
    """Turn an out-of-memory error inside the block into :class:`DeviceMemoryError` with advice, after
    releasing the memory the failed call held."""
    try:
        yield
    except DeviceMemoryError:
        raise
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        msg = memory_advice(device, what)
        del exc  # drop the traceback's frames (and their tensors) before freeing
        release_memory(device)
        raise DeviceMemoryError(msg) from None
