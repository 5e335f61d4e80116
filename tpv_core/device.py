"""Device and precision choices made at run time (CPU with or without bf16, CUDA when present)."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


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


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for the frozen model on ``device``: ``torch.bfloat16`` or None (plain fp32).

    "auto": bf16 on CUDA GPUs that support it and on CPUs with AVX512-BF16/AMX, fp32 otherwise.
    "fp32": always None. "bf16": always bf16 (slow on CPUs without native bf16, but allowed).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    dev = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        if dev.type == "cpu" and not cpu_supports_bf16():
            log.warning("bf16 requested on a CPU without native bf16 support: this will be slower than fp32")
        return torch.bfloat16
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if dev.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
