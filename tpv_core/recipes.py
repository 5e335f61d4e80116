"""Training recipes: named sets of training fields, resolved before a model loads.

* ``demo`` (the default): today's defaults, which learn on a 2-core CPU in minutes (the backbone
  family's L, lr, steps and batch from `tpv_core.training.FAMILY_DEFAULTS`, 6 % warmup, checkpoint
  chosen on 100 validation rows).
* ``paper`` (Belanec et al.): L = 100, lr 0.3, AdamW with weight decay 1e-5, 500 warmup steps then linear
  decay, batch 32, inputs up to 256 tokens, 10 epochs, validation once per epoch on the whole validation
  split, the best checkpoint kept.

Explicit fields (command-line flags) override a recipe's. `resolve_run` turns a recipe, a backbone name
and a task into every number a run will use (steps from the epoch budget and the row count), without
loading the model: ``tpv train ... --dry-run --json`` prints it. The recipe's name and the fields a user
overrode go into every prompt's metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from tpv_core.budget import warmup_steps
from tpv_core.training import FAMILY_DEFAULTS, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.tasks import TaskSpec

#: the fields a recipe sets (and a flag may override); ``length`` is the prompt length L.
RECIPE_FIELDS = ("length", "lr", "optimizer", "weight_decay", "warmup_steps", "warmup_ratio", "batch_size",
                 "max_length", "epochs", "steps", "eval_limit", "eval_every", "patience")


@dataclass(frozen=True)
class Recipe:
    """A named training recipe. ``None`` means the backbone family's default (demo) or, for
    ``eval_limit``, the whole validation split."""

    name: str
    description: str
    length: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 1e-5
    warmup_steps: int | None = None
    warmup_ratio: float = 0.06
    batch_size: int | None = None
    max_length: int | None = 256
    epochs: float | None = None
    steps: int | None = None
    eval_limit: int | None = 100
    eval_every: int | None = None
    patience: int | None = None  # early stopping: validations without a new best before the run stops

    def fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in RECIPE_FIELDS}


DEMO = Recipe("demo", "the CPU demo: the backbone family's defaults, checkpoint chosen on 100 validation rows")
PAPER = Recipe("paper", "Belanec et al.: L=100, lr 0.3, AdamW (wd 1e-5), 500 warmup steps then linear decay, "
                        "batch 32, 256 tokens, 10 epochs, checkpoint chosen on the whole validation split",
               length=100, lr=0.3, optimizer="adamw", weight_decay=1e-5, warmup_steps=500, warmup_ratio=0.0,
               batch_size=32, max_length=256, epochs=10, eval_limit=None)
RECIPES: dict[str, Recipe] = {r.name: r for r in (DEMO, PAPER)}


def get_recipe(name: str | Recipe) -> Recipe:
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The recipe's fields with explicit values put over them; and the names of the fields overridden.
    A value of ``None`` in ``overrides`` means "not given"; ``eval_limit="all"`` means the whole split.
    An explicit ``steps`` replaces an epoch budget (and an explicit ``epochs`` a step count); likewise an explicit
    ``warmup_ratio`` replaces a fixed number of warmup steps (and ``warmup_steps`` a ratio)."""
    fields = recipe.fields()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(RECIPE_FIELDS)
    if unknown:
        raise ValueError(f"unknown recipe fields {sorted(unknown)}; known: {', '.join(RECIPE_FIELDS)}")
    if given.get("eval_limit") == "all":
        given["eval_limit"] = None
    if "steps" in given and "epochs" not in given:
        fields["epochs"] = None
    if "epochs" in given and "steps" not in given:
        fields["steps"] = None
    if "warmup_ratio" in given and "warmup_steps" not in given:
        fields["warmup_steps"] = None
    fields.update(given)
    return fields, sorted(given)


def train_config(recipe: str | Recipe, overrides: Mapping[str, Any] | None = None, **extra: Any) -> tuple[TrainConfig, int | None]:
    """(TrainConfig, prompt length or None for the family default) of a recipe with overrides;
    ``extra`` are TrainConfig fields no recipe sets (k_shot, data_seed, chat, ...)."""
    r = get_recipe(recipe)
    fields, _ = apply_overrides(r, overrides)
    length = fields.pop("length")
    return TrainConfig(**fields, recipe=r.name, **extra), length


def recipe_metadata(recipe: str | Recipe, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a prompt records about its recipe: the name, the fields after overrides, which were overridden."""
    r = get_recipe(recipe)
    fields, changed = apply_overrides(r, overrides)
    return {"name": r.name, "fields": fields, "overridden": changed}


@dataclass
class ResolvedRun:
    """Every number of one training run, before any model loads."""

    recipe: str
    description: str
    backbone: dict[str, Any]
    task: str
    length: int
    config: TrainConfig
    data: dict[str, Any]
    overridden: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        c = self.config
        train_rows = (self.data.get("rows") or {}).get("train")
        val_rows = (self.data.get("rows") or {}).get("validation")
        used_train = c.k_shot if c.k_shot is not None else train_rows
        return {
            "recipe": self.recipe,
            "description": self.description,
            "backbone": self.backbone,
            "family": self.backbone.get("family"),
            "task": self.task,
            "fields": {
                "length": self.length, "lr": c.lr, "optimizer": c.optimizer, "weight_decay": c.weight_decay,
                "warmup_steps": warmup_steps(c), "schedule": "linear warmup, then linear decay to 0",
                "batch_size": c.batch_size, "max_length": c.max_length, "epochs": c.epochs,
                "eval_limit": c.eval_limit, "patience": c.patience,
                "selection": ("best checkpoint on the whole validation split" if c.eval_limit is None
                              else f"best checkpoint on {c.eval_limit} validation rows")
                + (f", stopping once {c.patience} validations in a row bring no new best (the steps are the cap)"
                   if c.patience else ""),
            },
            "overridden": self.overridden,
            "data": self.data,
            "train_rows_used": used_train,
            "validation_rows_scored": val_rows if c.eval_limit is None or val_rows is None else min(c.eval_limit, val_rows),
            "steps": c.steps,
            "steps_per_epoch": (max(1, -(-used_train // c.batch_size)) if used_train else None),
            "eval_every": c.eval_every,
            "config": c.as_dict(),
            "notes": self.notes,
        }


def resolve_run(backbone: str, task: "TaskSpec", recipe: str | Recipe = "demo",
                overrides: Mapping[str, Any] | None = None, *, world: int = 1, **extra: Any) -> ResolvedRun:
    """Resolve ``recipe`` (+ ``overrides``) for ``backbone`` (a name; its family is read from the provider
    table or the folder's config.json, not from weights) and ``task`` (bound to its data source with
    `tpv_core.tasks.sources.with_source`). Reads the data to count rows; never loads a model."""
    from tpv_core.backbones.registry import describe_backbone
    from tpv_core.tasks.sources import describe_data

    r = get_recipe(recipe)
    info = describe_backbone(backbone)
    notes = []
    family = info.get("family")
    if family is None:
        notes.append("the family of this hub model is read from its config once downloaded; decoder defaults assumed")
    cfg, length = train_config(r, overrides, **extra)
    _, overridden = apply_overrides(r, overrides)
    data = describe_data(task)
    train_rows = (data.get("rows") or {}).get("train")
    used = cfg.k_shot if cfg.k_shot is not None else train_rows
    resolved = cfg.resolved(family or "decoder", train_rows=used, world=world)
    length = length or FAMILY_DEFAULTS.get(family or "decoder", FAMILY_DEFAULTS["decoder"])["length"]
    if warmup_steps(resolved) >= resolved.steps:
        notes.append(f"warmup ({warmup_steps(resolved)} steps) is not shorter than the run ({resolved.steps} steps): "
                     "the learning rate never reaches its peak; use full data (--data-dir / --source hub) or --steps")
    return ResolvedRun(r.name, r.description, info, task.name, int(length), dataclasses.replace(resolved), data,
                       overridden, notes)
