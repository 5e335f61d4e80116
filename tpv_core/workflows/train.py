"""Train prompts into a store: the one workflow behind ``tpv train`` and the app's training jobs.

:func:`plan_training` decides, once, what happens to every (task, origin) item; :func:`train_into_store`
carries the plan out and reports structured :class:`TrainEvent` s that each front-end renders its own
way (a tqdm bar in the CLI, a job status in the app).

The retrain rule (one for every front-end): an item the store does not hold is trained; a stored item
is skipped, unless ``force`` (retrain), ``resume`` (continue it up to the budget, starting from its
validation score; a prompt that already has the budget's steps, or stopped early under ``patience``, is
finished and skipped, saying so), or it was tuned under another readout than the backbone
now uses for the task (then it is retrained, with a note saying so).

Checkpoints (:mod:`tpv_core.checkpoint`): with ``checkpoint_every`` each item saves its loop state every N
steps beside its future file; ``resume_checkpoints`` continues an item from a checkpoint a killed run left
(the CLI's ``--resume``; app jobs always do, ignoring a checkpoint of other settings). The checkpoint is
removed once the prompt is stored. A prompt is saved over a stored one only when the plan said so
(retrain / resume); one that another session stored meanwhile is not replaced (`PromptExistsError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from tpv_core.checkpoint import CheckpointPolicy, checkpoint_path
from tpv_core.prompts import Origin, SoftPrompt, make_origin
from tpv_core.store import PromptStore
from tpv_core.tasks import TaskSpec, get_task
from tpv_core.tasks.sources import with_source
from tpv_core.training import Progress, TrainConfig, TrainResult, default_length, tune_prompt, tuned_readout

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

TRAIN, SKIP, RETRAIN, RESUME = "train", "skip", "retrain", "resume"
CHECKPOINT_EVERY = 25  # steps between resumable checkpoints of an app training job


@dataclass(frozen=True)
class TrainRequest:
    """What to train: every task x every origin seed, on one backbone, into one store."""

    backbone: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    store_root: str
    config: TrainConfig = field(default_factory=TrainConfig)
    length: int | None = None  # None: the backbone family's default
    origin_kind: str = "vocab"
    force: bool = False  # retrain items the store already holds
    resume: bool = False  # continue stored items up to the budget
    source: str = "auto"  # task data: auto | bundled | hub (tpv_core.tasks.sources)
    data_dir: str | None = None  # a folder of full local task copies
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    checkpoint_every: int | None = None  # None: CHECKPOINT_EVERY; 0: no checkpoints

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))

    def validate(self) -> None:
        if not self.tasks:
            raise ValueError("a training request needs at least one task")
        if not self.seeds:
            raise ValueError("a training request needs at least one origin seed")
        if self.length is not None and self.length < 1:
            raise ValueError(f"prompt length must be >= 1, got {self.length}")
        if self.force and self.resume:
            raise ValueError("force (retrain from the origin) and resume (continue the stored prompt) exclude "
                             "each other; pick one")

    def items(self) -> list[tuple[str, int]]:
        return [(t, s) for t in self.tasks for s in self.seeds]

    def label(self) -> str:
        tasks = ", ".join(self.tasks[:4]) + (f" +{len(self.tasks) - 4}" if len(self.tasks) > 4 else "")
        return f"{self.backbone}: {tasks} x origins {','.join(str(s) for s in self.seeds)}"


@dataclass(frozen=True)
class PlanItem:
    task: TaskSpec
    seed: int
    origin: Origin
    action: str  # train | skip | retrain | resume
    reason: str = ""
    resume_from: SoftPrompt | None = None

    @property
    def what(self) -> str:
        return f"{self.task.name} / {self.origin.id}"


@dataclass(frozen=True)
class TrainEvent:
    """One thing that happened: ``kind`` is ``skip``, ``start``, ``step`` or ``saved``."""

    kind: str
    item: PlanItem
    index: int  # 0-based position of the item in the plan
    total: int
    progress: Progress | None = None
    path: str | None = None
    result: TrainResult | None = None


@dataclass
class TrainOutcome:
    saved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    results: list[TrainResult] = field(default_factory=list)
    cancelled: bool = False


def plan_training(backbone: "Backbone", store: PromptStore, tasks: Sequence[TaskSpec], seeds: Sequence[int], *,
                  length: int | None = None, origin_kind: str = "vocab", force: bool = False,
                  resume: bool = False, steps: int | None = None) -> list[PlanItem]:
    """The retrain rule applied to every (task, seed) item (see the module docstring); ``steps`` is the
    budget a resumed prompt is continued to (a stored prompt that has it is skipped)."""
    length = length or default_length(backbone)
    plan = []
    for task in tasks:
        for seed in seeds:
            origin = make_origin(backbone, kind=origin_kind, seed=int(seed), length=length)
            if not store.exists(backbone.name, task.name, origin.id):
                plan.append(PlanItem(task, int(seed), origin, TRAIN))
                continue
            stored = store.load(backbone.name, task.name, origin.id)
            have_steps = int(stored.metadata.get("steps") or 0)
            if resume and stored.metadata.get("stopped_early"):
                plan.append(PlanItem(task, int(seed), origin, SKIP, f"the stored prompt is finished (it stopped early "
                                     f"at step {have_steps}: validation stopped improving); --resume leaves it as it is"))
            elif resume and steps is not None and have_steps >= steps:
                plan.append(PlanItem(task, int(seed), origin, SKIP, f"the stored prompt is finished ({have_steps} of "
                                     f"{steps} steps); --resume leaves it as it is"))
            elif resume:
                plan.append(PlanItem(task, int(seed), origin, RESUME, "continue the stored prompt", stored))
            elif force:
                plan.append(PlanItem(task, int(seed), origin, RETRAIN, "--force: retrain from the origin"))
            else:
                have, want = tuned_readout(stored, task.name), backbone.readout(task)
                if have in (None, want):
                    plan.append(PlanItem(task, int(seed), origin, SKIP, f"already in {store.root}"))
                else:
                    plan.append(PlanItem(task, int(seed), origin, RETRAIN,
                                         f"the stored prompt was tuned for the {have!r} readout, {backbone.name} "
                                         f"now reads {task.name} by {want!r}"))
    return plan


def is_secondary_rank() -> bool:
    """True in a torchrun process other than rank 0 (every rank holds the same prompt: rank 0 saves it)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def train_into_store(backbone: "Backbone", store: PromptStore, plan: Sequence[PlanItem], config: TrainConfig, *,
                     metadata: dict[str, Any] | None = None, on_event: Callable[[TrainEvent], None] | None = None,
                     cancel: Callable[[], bool] | None = None, checkpoint_every: int = 0,
                     resume_checkpoints: bool = False, discard_mismatched: bool = False) -> TrainOutcome:
    """Carry out a plan: tune each item that needs it and save it atomically (rank 0 only under torchrun).
    Stops between steps when ``cancel()`` turns true (the item being tuned is not saved; its checkpoint
    stays, so a later run can continue it). Checkpoints: see the module docstring."""
    out = TrainOutcome()
    emit = on_event or (lambda _e: None)
    total = len(plan)
    for i, item in enumerate(plan):
        if cancel is not None and cancel():
            out.cancelled = True
            break
        if item.action == SKIP:
            out.skipped.append(item.what)
            emit(TrainEvent("skip", item, i, total))
            continue
        emit(TrainEvent("start", item, i, total))

        def on_step(p: Progress, item=item, i=i) -> None:
            emit(TrainEvent("step", item, i, total, progress=p))

        target = store.path_for(backbone.name, item.task.name, item.origin.id)
        ckpt = (CheckpointPolicy(checkpoint_path(target), checkpoint_every, resume=resume_checkpoints,
                                 discard_mismatch=discard_mismatched) if checkpoint_every else None)
        result = tune_prompt(backbone, item.task, item.origin, config, progress=on_step, cancel=cancel,
                             resume=item.resume_from, metadata=dict(metadata or {}), checkpoint=ckpt)
        if result.cancelled or (cancel is not None and cancel()):
            out.cancelled = True
            break
        out.results.append(result)
        if is_secondary_rank():
            continue
        path = str(store.save(result.prompt, overwrite=item.action in (RETRAIN, RESUME)))
        if ckpt is not None:
            ckpt.remove()
        out.saved.append(path)
        emit(TrainEvent("saved", item, i, total, path=path, result=result))
    return out


def train_request(backbone: "Backbone", request: TrainRequest, *,
                  on_event: Callable[[TrainEvent], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> TrainOutcome:
    """Plan and run a :class:`TrainRequest` on a loaded backbone (tasks looked up with the store's custom
    tasks)."""
    request.validate()
    store = PromptStore(request.store_root)
    tasks = [with_source(get_task(name, request.store_root), request.source, request.data_dir)
             for name in request.tasks]
    plan = plan_training(backbone, store, tasks, request.seeds, length=request.length,
                         origin_kind=request.origin_kind, force=request.force, resume=request.resume,
                         steps=request.config.resolved(backbone.family).steps)
    every = CHECKPOINT_EVERY if request.checkpoint_every is None else request.checkpoint_every
    return train_into_store(backbone, store, plan, request.config, metadata=request.metadata, on_event=on_event,
                            cancel=cancel, checkpoint_every=every, resume_checkpoints=True, discard_mismatched=True)

