"""Prompt tuning: the loop, on one screen.

Only the soft prompt trains (the model is frozen and shared). AdamW (or Adafactor) with warmup and
linear decay, gradient clipping, bf16 autocast inside the backbone, dynamic padding, periodic
validation that keeps the best prompt, deterministic for a seed, cancellable between steps, and
resumable from a stored prompt.

Data parallel: under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1; set-up in
`tpv_core.distributed`) every process draws the same global batch order and takes its own slice of each
global batch (``batch_size`` rows per process). Each rank sums its items' losses, the item counts are
summed over ranks first, and the gradients of sum / global count are summed with ``all_reduce``: the
global token average, so N processes with batch B follow the path of one process with batch N*B even
when multi-token labels give ranks different token counts. Validation is split across ranks
(`evaluation.evaluate`).

Host syncs: the step reads nothing back from the device (targets are checked on the host, batch layouts
are built on the host); the loss is read every ``log_every`` steps on accelerators (every step on CPU,
where reading costs nothing), so a GPU can run ahead of Python.

Longer than 350 lines because the loop stays on one screen with everything it shares state with
(data-parallel reduction, batched loss reads, checkpoints, validation, best-prompt keeping).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.distributed as dist

from tpv_core import __version__
from tpv_core import distributed
from tpv_core.budget import epoch_steps, lr_schedule, warmup_steps
from tpv_core.device import default_batch_size
from tpv_core.evaluation import PreparedSplit, evaluate, prepare_split
from tpv_core.prompts import Origin, SoftPrompt
from tpv_core.readout import check_readout, tuned_readout  # noqa: F401  (tuned_readout: re-exported)
from tpv_core.tasks import k_shot as sample_k_shot
from tpv_core.tasks import load_split
from tpv_core.tasks.sources import data_record

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone
    from tpv_core.checkpoint import CheckpointPolicy
    from tpv_core.tasks import TaskSpec

# Defaults that learn on a 2-core CPU in minutes (chosen by measurement; see the README's table).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {"lr": 0.05, "steps": 100, "batch_size": 8, "length": 20},
    "decoder": {"lr": 0.05, "steps": 100, "batch_size": 8, "length": 20},
    "seq2seq": {"lr": 0.3, "steps": 300, "batch_size": 8, "length": 20},
}


@dataclass
class TrainConfig:
    """How a prompt is tuned. ``None`` fields take the backbone family's default."""

    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"  # adamw | adafactor
    weight_decay: float = 1e-5
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None  # a fixed number of warmup steps (the paper: 500); overrides warmup_ratio
    epochs: float | None = None  # a budget in passes over the training rows; used when steps is None
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # default: steps // 5
    eval_limit: int | None = 100  # validation rows scored during training (None = all)
    patience: int | None = None  # stop after this many validations in a row without a new best (None: whole budget)
    eval_batch_size: int = 32
    max_length: int | None = 256
    group_by_length: bool = True  # batches of similar lengths (less padding; benchmarks/README.md)
    k_shot: int | None = None
    data_seed: int = 0
    chat: bool = False
    selection_metric: str | None = None  # default: the task's first metric
    recipe: str = "demo"  # the recipe these fields came from (tpv_core.recipes), recorded with the prompt
    log_every: int | None = None  # steps between loss reads (host syncs); default 1 on CPU, 10 on accelerators

    def resolved(self, family: str, train_rows: int | None = None, world: int = 1,
                 device: "torch.device | str | None" = None) -> "TrainConfig":
        """Every ``None`` filled in for the backbone ``family`` on ``device`` (the batch size depends on it); an
        epoch budget becomes steps, validated once per epoch (`budget`)."""
        d = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["decoder"])
        on_cpu = device is None or torch.device(device).type == "cpu"
        batch_size = self.batch_size if self.batch_size is not None else (
            d["batch_size"] if on_cpu else default_batch_size(device))
        steps, per_epoch = epoch_steps(self.epochs, self.steps, train_rows, batch_size, world)
        c = dataclasses.replace(
            self,
            steps=steps if steps is not None else d["steps"],
            batch_size=batch_size,
            lr=self.lr if self.lr is not None else d["lr"],
            log_every=self.log_every if self.log_every is not None else (1 if on_cpu else 10),
        )
        if c.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {c.log_every}")
        if c.eval_every is None:
            c.eval_every = per_epoch or max(1, c.steps // 5)
        if c.optimizer not in ("adamw", "adafactor"):
            raise ValueError(f"unknown optimizer {c.optimizer!r}; adamw or adafactor")
        if c.patience is not None and c.patience < 1:
            raise ValueError(f"patience must be >= 1 validations (or None for the whole budget), got {c.patience}")
        if not 0 <= c.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {c.warmup_ratio}")
        if c.steps < 0 or c.batch_size < 1 or c.lr <= 0 or warmup_steps(c) < 0:
            raise ValueError(f"bad training budget: steps={c.steps} batch_size={c.batch_size} lr={c.lr} ({c})")
        return c

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Progress:
    """What a progress callback receives after every step."""

    step: int
    steps: int
    loss: float
    lr: float
    elapsed_s: float  # since tune_prompt was called (set-up included)
    val_score: float | None = None
    best_score: float | None = None
    loop_s: float | None = None  # since the first step of this run began (set-up excluded)
    first_step: int = 0  # steps already done before this run (resume)

    @property
    def eta_s(self) -> float:
        """Time left at the rate of this run's steps so far (tokenizing and the initial validation
        excluded, so the first estimate is not inflated by set-up)."""
        ran = max(self.step - self.first_step, 1)
        spent = self.loop_s if self.loop_s is not None else self.elapsed_s
        return spent / ran * max(self.steps - self.step, 0)


@dataclass
class TrainResult:
    prompt: SoftPrompt
    history: pd.DataFrame
    best_step: int
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def default_length(backbone: "Backbone") -> int:
    return FAMILY_DEFAULTS.get(backbone.family, FAMILY_DEFAULTS["decoder"])["length"]


def _optimizer(cfg: TrainConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def training_rows(task: "TaskSpec", cfg: TrainConfig, rows: list[dict] | None = None) -> list[dict]:
    rows = rows if rows is not None else load_split(task, "train")
    if cfg.k_shot is not None:
        rows = sample_k_shot(rows, cfg.k_shot, cfg.data_seed, task)
    return rows


GROUP_SPAN = 50  # batches sorted together when grouping by length


class _Stream:
    """One task's training data, tokenized once, drawn in a seeded order shared by every process."""

    def __init__(self, backbone: "Backbone", task: "TaskSpec", rows: list[dict], cfg: TrainConfig, seed: int):
        self.task, self.rows, self.labels = task, rows, task.label_set()
        self.ids = backbone.tokenize([backbone.format(task, r) for r in rows], chat=cfg.chat)
        self.targets = torch.tensor([task.label_of(r) for r in rows], dtype=torch.long)
        self.gen = torch.Generator().manual_seed(seed)
        self.grouped = cfg.group_by_length
        self.order: list[int] = []

    def _refill(self, global_batch: int) -> list[int]:
        """One seeded pass over the rows. Length-grouped (what HF calls group_by_length): the pass is cut
        into spans of ``GROUP_SPAN`` batches, each span sorted by length and cut into batches, and the
        batches shuffled, so a batch holds rows of similar length (30% padding -> 1% on SST-2)."""
        perm = torch.randperm(len(self.rows), generator=self.gen).tolist()
        if not self.grouped:
            return perm
        span = GROUP_SPAN * global_batch
        batches = []
        for s in range(0, len(perm), span):
            part = sorted(perm[s : s + span], key=lambda i: len(self.ids[i]))
            batches += [part[j : j + global_batch] for j in range(0, len(part), global_batch)]
        return [i for b in torch.randperm(len(batches), generator=self.gen).tolist() for i in batches[b]]

    def next_indices(self, global_batch: int, rank: int, batch_size: int) -> list[int]:
        while len(self.order) < global_batch:
            self.order += self._refill(global_batch)
        chunk, self.order = self.order[:global_batch], self.order[global_batch:]
        return chunk[rank * batch_size : (rank + 1) * batch_size]


def task_key(tasks: "TaskSpec | Sequence[TaskSpec]") -> str:
    """Store name of a (multi-)task prompt: ``mnli`` or ``mnli+qnli``."""
    tasks = [tasks] if not isinstance(tasks, (list, tuple)) else list(tasks)
    return "+".join(t.name for t in tasks)


def stale_validations(history: Sequence[Mapping[str, Any]], best_step: int, metric: str) -> int:
    """How many validations in ``history`` came after the best one (``best_step``): the early-stopping count a
    run resumed from a checkpoint continues from."""
    key = f"val_{metric}"
    return sum(1 for r in history if r.get(key) is not None and r["step"] > best_step)


def tune_prompt(
    backbone: "Backbone",
    task: "TaskSpec | Sequence[TaskSpec]",
    origin: Origin,
    config: TrainConfig | None = None,
    progress: Callable[[Progress], None] | None = None,
    *,
    init: torch.Tensor | None = None,
    train_rows: list[dict] | None = None,
    validation: PreparedSplit | Sequence[PreparedSplit] | None = None,
    cancel: Callable[[], bool] | None = None,
    resume: SoftPrompt | None = None,
    metadata: dict[str, Any] | None = None,
    checkpoint: "CheckpointPolicy | None" = None,
) -> TrainResult:
    """Tune a soft prompt for ``task`` on a frozen ``backbone``, starting from ``origin``.

    ``task`` may be a list of tasks: a multi-task prompt, trained on batches drawn from each task in
    turn and selected on the mean of the tasks' validation scores (stored as ``mnli+qnli``).
    ``init`` starts from another tensor (e.g. P0 + a sum of task prompt vectors) while the prompt is
    still recorded against ``origin`` (so its vector is P - P0). ``resume`` continues a stored run from
    its step count (fresh optimizer state). ``cancel()`` returning True stops between steps and returns
    the best prompt so far with ``cancelled=True``. ``checkpoint`` (a `CheckpointPolicy`) saves the loop's
    state every N steps and, with ``resume=True`` on the policy, continues from a saved one (exactly: same
    batches, optimizer state and best prompt); the caller removes it once the prompt is stored.
    """
    base = config or TrainConfig()
    tasks = list(task) if isinstance(task, (list, tuple)) else [task]
    if not tasks:
        raise ValueError("tune_prompt needs at least one task")
    name = task_key(tasks)
    if origin.backbone != backbone.name:
        raise ValueError(f"origin {origin.id} was made for backbone {origin.backbone!r}, not {backbone.name!r}")
    if origin.dim != backbone.dim:
        raise ValueError(f"origin {origin.id} has width {origin.dim} but {backbone.name} has d={backbone.dim}")
    if train_rows is not None and len(tasks) > 1:
        raise ValueError("train_rows can only be given for a single task")
    ctx = distributed.ensure_for(backbone.device)
    rank, world = ctx.rank, ctx.world_size
    t0 = time.perf_counter()

    rows = [training_rows(t, base, train_rows) for t in tasks]
    cfg = base.resolved(backbone.family, train_rows=sum(map(len, rows)), world=world, device=backbone.device)
    streams = [_Stream(backbone, t, r, cfg, cfg.data_seed + i) for i, (t, r) in enumerate(zip(tasks, rows))]
    if validation is None and cfg.eval_every and cfg.steps:
        validation = [prepare_split(backbone, t, "validation", limit=cfg.eval_limit, chat=cfg.chat) for t in tasks]
    elif isinstance(validation, PreparedSplit):
        validation = [validation]
    metric = cfg.selection_metric or (tasks[0].metrics[0] if len(tasks) == 1 and tasks[0].metrics else "main")

    start_tensor = init if init is not None else origin.require_tensor()
    if tuple(start_tensor.shape) != (origin.length, origin.dim):
        raise ValueError(f"init tensor {tuple(start_tensor.shape)} does not match origin {origin.id}")
    start_step = 0
    if resume is not None:
        if resume.origin != origin or resume.task != name:
            raise ValueError(f"cannot resume: stored prompt is {resume.task}/{resume.origin.id}, not {name}/{origin.id}")
        for t in tasks:
            check_readout(resume, backbone, t)
        start_tensor, start_step = resume.tensor, int(resume.metadata.get("steps") or 0)
    prompt = torch.nn.Parameter(start_tensor.detach().float().clone().to(backbone.device))
    opt = _optimizer(cfg, [prompt])
    # fp16 weights (GPUs without native bf16): scale the loss so the prompt's gradient does not underflow
    scaler = torch.amp.GradScaler(backbone.device.type) if backbone.weight_dtype == torch.float16 else None
    factor = lr_schedule(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s + start_step))

    global_batch = cfg.batch_size * world
    history: list[dict[str, Any]] = []
    best_score, best_step, best = -math.inf, start_step, prompt.detach().clone()
    cancelled = False
    spent_before = 0.0  # seconds of earlier runs (resumed from a checkpoint)
    identity = {"backbone": backbone.name, "task": name, "origin": origin.id, "start_step": start_step,
                "init": "origin" if init is None else "custom", "config": cfg.as_dict()}
    restored = checkpoint.restore(identity) if checkpoint is not None else None
    if restored is not None:
        with torch.no_grad():
            prompt.copy_(restored.prompt.to(prompt.device))
        opt.load_state_dict(restored.optimizer)
        start_step, history, spent_before = restored.step, restored.history, restored.elapsed_s
        best_score, best_step, best = restored.best_score, restored.best_step, restored.best.to(prompt.device)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s + start_step))
    done = start_step
    stale = stale_validations(history, best_step, metric)  # validations since the best one (early stopping)
    stopped_early = False

    def draw(step: int) -> tuple[_Stream, list[int]]:
        stream = streams[step % len(streams)]  # multi-task: one task per batch, in turn
        return stream, stream.next_indices(global_batch, rank, cfg.batch_size)

    for s in range(start_step):  # replay the data order so a resumed run sees the same batches
        draw(s)

    def validate() -> float:
        scores = []
        for prepared in validation:
            res = evaluate(backbone, prepared.task, prompt.detach(), prepared, batch_size=cfg.eval_batch_size)
            scores.append(float(res.metrics.get(metric, res.main)))
        return sum(scores) / len(scores)

    if validation and cfg.steps and restored is None and (start_step == 0 or resume is not None):
        # the starting prompt is the first candidate: the origin, or the stored prompt a resumed run continues
        # (so continuing never returns a prompt that validates worse than the one it started from)
        best_score = validate()
        history.append({"step": start_step, "loss": None, "lr": 0.0, f"val_{metric}": best_score})
        if resume is not None:
            kept = resume.metadata.get("best_step")  # the stored tensor is that step's
            best_step = start_step if kept is None else int(kept)

    t_loop = time.perf_counter()
    pending: list[tuple[dict[str, Any], torch.Tensor, float | None]] = []  # records whose loss is still on the device
    mark_step = None
    if backbone.device.type == "lazy":  # a lazy-tensor device runs a step's graph at the step boundary (XLA-style)
        from torch._lazy import mark_step

    def flush() -> None:
        """Read the pending losses in one host sync, then record and report those steps in order."""
        if not pending:
            return
        values = torch.stack([t for _, t, _ in pending]).tolist()
        for (record, _, val), value in zip(pending, values):
            record["loss"] = value
            history.append(record)
            if progress is not None and rank == 0:
                now = time.perf_counter()
                progress(Progress(record["step"], cfg.steps, value, record["lr"], now - t0, val,
                                  None if best_score == -math.inf else best_score, now - t_loop, start_step))
        pending.clear()

    for step in range(start_step, cfg.steps):
        if cancel is not None and cancel():
            cancelled = True
            break
        stream, idx = draw(step)
        with backbone.forward_slot(f"training step {step + 1} ({len(idx)} rows per process)"):
            batch = backbone.collate([stream.ids[i] for i in idx], max_length=cfg.max_length)
            total, count = backbone.loss_terms(batch, prompt, stream.labels, stream.targets[idx])
            # [sum of losses, number of items] over all ranks: one collective, no host sync
            loss_sum, n_items = total.detach().float(), torch.full((), float(max(count, 1)), device=total.device)
            if world > 1:
                stats = distributed.all_reduce_sum_(torch.stack([loss_sum, n_items]))
                loss_sum, n_items = stats[0], stats[1]
            loss = total / n_items  # this rank's share of the global token average
            opt.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if world > 1:  # sum of the shares = gradient of the global average
                dist.all_reduce(prompt.grad, op=dist.ReduceOp.SUM)
            if scaler is not None:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([prompt], cfg.max_grad_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
        if mark_step is not None:
            mark_step()
        record: dict[str, Any] = {"step": step + 1, "loss": None, "lr": sched.get_last_lr()[0]}
        val = None
        if validation and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            val = validate()
            record[f"val_{metric}"] = val
            if val > best_score:
                best_score, best_step, best = val, step + 1, prompt.detach().clone()
                stale = 0
            else:
                stale += 1
        pending.append((record, loss_sum / n_items, val))
        done = step + 1
        stopped_early = cfg.patience is not None and stale >= cfg.patience and done < cfg.steps
        if checkpoint is not None and rank == 0 and checkpoint.due(done, cfg.steps):
            from tpv_core.checkpoint import TrainState

            flush()  # the history up to this step goes into the checkpoint (one loss read, at checkpoints only)
            checkpoint.save(TrainState(done, prompt, best, best_score, best_step, history, opt.state_dict(),
                                       spent_before + time.perf_counter() - t0), identity)
        if val is not None or (step + 1 - start_step) % cfg.log_every == 0:
            flush()
        if stopped_early:  # validation stopped improving: the best prompt so far is the result
            break
    flush()
    if best_score == -math.inf:  # no validation: the last prompt is the result
        best, best_step = prompt.detach().clone(), done

    hist = pd.DataFrame(history)
    meta = {"recipe": {"name": cfg.recipe}, **(metadata or {})}  # the recipe's resolved fields: "training"
    meta.update(
        backbone_model_id=backbone.model_id,
        backbone_revision=backbone.revision,
        backbone_family=backbone.family,
        readout={t.name: backbone.readout(t) for t in tasks},
        training={**cfg.as_dict(), "train_rows": sum(len(s.rows) for s in streams), "world_size": world,
                  "tasks": [t.name for t in tasks], "init": "origin" if init is None else "custom",
                  "precision": str(backbone.compute_dtype), "weights_dtype": str(backbone.weight_dtype),
                  "device_type": backbone.device.type, **backbone.run_options(),
                  "warmup_steps_used": warmup_steps(cfg)},
        data={t.name: data_record(t, len(s.rows), len(v) if v is not None else None)
              for t, s, v in zip(tasks, streams, validation or [None] * len(tasks))},
        metrics={f"val_{metric}": best_score} if best_score != -math.inf else {},
        steps=done,
        best_step=best_step,
        stopped_early=stopped_early,
        wall_time_s=round(spent_before + time.perf_counter() - t0, 2),
        library_version=__version__,
    )
    soft = SoftPrompt(best.float().cpu(), origin, name, backbone.name, meta)
    return TrainResult(soft, hist, best_step, cancelled)
