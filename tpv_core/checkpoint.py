"""Resumable training checkpoints: a killed ``tpv train`` (or app job) continues where it stopped.

A checkpoint is one safetensors file beside the prompt it will become,
``<root>/<backbone>/<task>/.<origin-id>.ckpt`` (hidden, so the store's index never lists it), written
atomically every ``every`` steps and removed once the prompt is saved. It holds the current prompt, the
best prompt so far, the optimizer state (tensors) and, as JSON metadata, the step, the best score and
step, the history rows, the time spent and the run's identity (backbone, task, origin, training config).
The data order is not stored: the training loop replays it from its seed, so a resumed run sees the same
batches as an unbroken one.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tpv_core.store_schema import StoreError

CKPT_SCHEMA = 1
META_KEY = "tpv_checkpoint"
SUFFIX = ".ckpt"


class CheckpointError(StoreError):
    """A checkpoint that cannot be used (corrupt, or made by a different run)."""


def checkpoint_path(prompt_path: str | Path) -> Path:
    """Where the checkpoint of the prompt stored at ``prompt_path`` lives (hidden, beside it)."""
    p = Path(prompt_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(f".{stem}{SUFFIX}")


@dataclass
class TrainState:
    """What the loop needs to continue: restored by :meth:`CheckpointPolicy.restore`."""

    step: int
    prompt: torch.Tensor
    best: torch.Tensor
    best_score: float
    best_step: int
    history: list[dict[str, Any]]
    optimizer: dict[str, Any]
    elapsed_s: float = 0.0


@dataclass
class CheckpointPolicy:
    """Save a checkpoint to ``path`` every ``every`` steps; with ``resume``, start from it when it exists."""

    path: Path
    every: int = 25
    resume: bool = False
    discard_mismatch: bool = False  # True: a checkpoint of another run (other settings) is ignored, not an error
    saved_steps: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"checkpoint interval must be a whole number of steps >= 1, got {self.every!r}")

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 and step < total

    def exists(self) -> bool:
        return self.path.is_file()

    # ------------------------------------------------------------------------------------------
    def save(self, state: TrainState, identity: dict[str, Any]) -> Path:
        from tpv_core.atomic import atomic_write_bytes

        tensors: dict[str, torch.Tensor] = {
            "prompt": state.prompt.detach().float().cpu().clone().contiguous(),
            "best": state.best.detach().float().cpu().clone().contiguous(),
        }
        opt_state: dict[str, dict[str, Any]] = {}
        for pid, values in state.optimizer.get("state", {}).items():
            plain = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{pid}.{key}"] = value.detach().cpu().clone().contiguous()
                else:
                    plain[key] = value
            opt_state[str(pid)] = plain
        meta = {
            "schema": CKPT_SCHEMA,
            "identity": identity,
            "step": int(state.step),
            "best_score": state.best_score,
            "best_step": int(state.best_step),
            "history": state.history,
            "elapsed_s": float(state.elapsed_s),
            "opt_state_plain": opt_state,
            "opt_param_groups": state.optimizer.get("param_groups", []),
        }
        blob = st_save(tensors, metadata={META_KEY: json.dumps(_jsonable(meta))})
        atomic_write_bytes(self.path, blob)
        self.saved_steps.append(int(state.step))
        return self.path

    def restore(self, identity: dict[str, Any]) -> TrainState | None:
        """The saved state when ``resume`` is on and a checkpoint of the same run exists, else None."""
        if not self.resume or not self.path.exists():
            return None
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: not a regular file; remove it", self.path)
        try:
            blob = self.path.read_bytes()
            tensors = st_load(blob)
            (n,) = struct.unpack("<Q", blob[:8])
            meta = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"][META_KEY])
        except Exception as exc:  # noqa: BLE001 - safetensors and json raise their own types
            raise CheckpointError(f"{self.path}: unreadable checkpoint ({exc}); delete it to start over",
                                  self.path) from None
        if not isinstance(meta, dict) or meta.get("schema") != CKPT_SCHEMA:
            raise CheckpointError(f"{self.path}: unknown checkpoint format; delete it to start over", self.path)
        have = meta.get("identity") or {}
        want = _jsonable(identity)
        if have != want and self.discard_mismatch:
            return None
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            detail = "; ".join(f"{k}: checkpoint {have.get(k)!r:.60} vs now {want.get(k)!r:.60}" for k in diff[:4])
            raise CheckpointError(
                f"{self.path}: the checkpoint was made by a different run ({detail}); rerun with the same "
                "settings, or delete the checkpoint to start over", self.path, diff[0] if diff else None)
        opt: dict[str, Any] = {"state": {}, "param_groups": meta.get("opt_param_groups", [])}
        for pid, plain in (meta.get("opt_state_plain") or {}).items():
            values = dict(plain)
            prefix = f"opt.{pid}."
            for name, t in tensors.items():
                if name.startswith(prefix):
                    values[name[len(prefix):]] = t
            opt["state"][int(pid)] = values
        for name in ("prompt", "best"):
            if name not in tensors or not bool(torch.isfinite(tensors[name]).all()):
                raise CheckpointError(f"{self.path}: tensor {name!r} missing or not finite; delete the checkpoint",
                                      self.path, name)
        best_score = meta.get("best_score")
        return TrainState(
            step=int(meta["step"]),
            prompt=tensors["prompt"],
            best=tensors["best"],
            best_score=-math.inf if best_score is None else float(best_score),
            best_step=int(meta.get("best_step", 0)),
            history=list(meta.get("history") or []),
            optimizer=opt,
            elapsed_s=float(meta.get("elapsed_s", 0.0)),
        )

    def remove(self) -> None:
        """Delete the checkpoint (call once the finished prompt is safely stored)."""
        self.path.unlink(missing_ok=True)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (tuples as lists, -inf kept as a float) so saved and expected identities compare equal."""
    return json.loads(json.dumps(obj, default=str))
