"""A grid plan: a short YAML file that expands into independent jobs.

```yaml
name: demo
recipe: demo                  # demo | paper (per section too)
source: auto                  # auto | bundled | hub; data_dir: a folder of full local copies
resources: {num_cpus: 1, num_gpus: 0}     # what one job asks of an executor
train:                        # source prompts: backbones x tasks x origins
  backbones: [minilm-l6]
  tasks: [sst2, trec]
  origins: [0, 1]
  overrides: {steps: 30}      # recipe fields (RECIPE_FIELDS), as on the command line
fewshot:                      # then: targets x k x inits x seeds, from the prompts stored above
  backbones: [minilm-l6]
  targets: [imdb]
  sources: [sst2, yelp_polarity]
  k: [10, 50]
  inits: [random, spot, tpv]
  seeds: [0, 1]
  test_limit: 200
```
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tpv_core.recipes import RECIPE_FIELDS, apply_overrides, get_recipe

TOP_KEYS = {"name", "recipe", "source", "data_dir", "resources", "origin_kind", "train", "fewshot", "store"}
TRAIN_KEYS = {"backbones", "tasks", "origins", "overrides", "recipe", "origin_kind"}
FEWSHOT_KEYS = {"backbones", "targets", "sources", "k", "inits", "seeds", "overrides", "recipe", "test_limit",
                "source_recipe", "origin_kind"}
FEWSHOT_INITS = ("random", "spot", "tpv")


class PlanError(ValueError):
    """A plan file that cannot be run; the message names the key and the fix."""


@dataclass(frozen=True)
class Job:
    """One independent unit of a grid: tune one prompt (and, for few-shot, score it on the test split)."""

    kind: str  # "train" | "fewshot"
    backbone: str
    task: str  # the task trained on (few-shot: the target)
    seed: int  # origin seed (few-shot: origin and k-shot sample seed)
    recipe: str
    overrides: tuple[tuple[str, Any], ...] = ()
    source: str = "auto"
    data_dir: str | None = None
    origin_kind: str = "vocab"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # few-shot only
    k: int | None = None
    init: str | None = None
    sources: tuple[str, ...] = ()
    source_recipe: str | None = None
    test_limit: int | None = None

    @property
    def store_task(self) -> str:
        """The task name the prompt is stored under (few-shot prompts are kept apart from full-data ones)."""
        return self.task if self.kind == "train" else f"{self.task}.k{self.k}.{self.init}"

    @property
    def id(self) -> str:
        return f"{self.backbone}/{self.store_task}/s{self.seed}"

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    def recipe_fields(self) -> dict[str, Any]:
        """The recipe's fields after this job's overrides (what a stored prompt must match to be skipped)."""
        fields, _ = apply_overrides(get_recipe(self.recipe), self.overrides_dict())
        return json.loads(json.dumps(fields))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overrides"] = self.overrides_dict()
        d["sources"] = list(self.sources)
        d["id"] = self.id
        return d


@dataclass
class Plan:
    name: str
    train: list[Job] = field(default_factory=list)
    fewshot: list[Job] = field(default_factory=list)
    store: str | None = None

    @property
    def jobs(self) -> list[Job]:
        return self.train + self.fewshot


def _list(section: Mapping[str, Any], key: str, where: str, required: bool = True) -> list:
    v = section.get(key)
    if v is None:
        if required:
            raise PlanError(f"{where}: '{key}' is missing (a list)")
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _seeds(values: list, where: str) -> list[int]:
    out: list[int] = []
    for v in values:
        s = str(v)
        try:
            if "-" in s[1:]:
                a, b = s.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(s))
        except ValueError:
            raise PlanError(f"{where}: {v!r} is not a seed (an integer or a range like 0-2)") from None
    return out


def _overrides(section: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    ov = section.get("overrides") or {}
    if not isinstance(ov, Mapping):
        raise PlanError(f"{where}.overrides: expected a mapping of recipe fields")
    bad = set(ov) - set(RECIPE_FIELDS)
    if bad:
        raise PlanError(f"{where}.overrides: unknown fields {sorted(bad)}; known: {', '.join(RECIPE_FIELDS)}")
    return tuple(sorted(ov.items()))


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(section, Mapping):
        raise PlanError(f"{where}: expected a mapping")
    bad = set(section) - allowed
    if bad:
        raise PlanError(f"{where}: unknown keys {sorted(bad)}; allowed: {', '.join(sorted(allowed))}")


def parse_plan(data: Mapping[str, Any], *, name: str = "grid", validate: bool = True) -> Plan:
    """Expand a plan mapping into jobs. ``validate`` checks task names, recipes and backbones up front
    (unknown names fail here, not hours into a grid)."""
    _check_keys(data, TOP_KEYS, "plan")
    if "train" not in data and "fewshot" not in data:
        raise PlanError("plan: needs a 'train' and/or a 'fewshot' section")
    recipe = str(data.get("recipe", "demo"))
    source = str(data.get("source", "auto"))
    data_dir = data.get("data_dir")
    res = data.get("resources") or {}
    _check_keys(res, {"num_cpus", "num_gpus"}, "plan.resources")
    common = dict(source=source, data_dir=str(data_dir) if data_dir else None,
                  num_cpus=float(res.get("num_cpus", 1)), num_gpus=float(res.get("num_gpus", 0)))
    plan = Plan(name=str(data.get("name", name)), store=data.get("store"))
    if "train" in data:
        t = data["train"]
        _check_keys(t, TRAIN_KEYS, "train")
        r = str(t.get("recipe", recipe))
        ov = _overrides(t, "train")
        kind = str(t.get("origin_kind", data.get("origin_kind", "vocab")))
        for b, task, s in itertools.product(_list(t, "backbones", "train"), _list(t, "tasks", "train"),
                                            _seeds(_list(t, "origins", "train"), "train.origins")):
            plan.train.append(Job("train", str(b), str(task), s, r, ov, origin_kind=kind, **common))
    if "fewshot" in data:
        f = data["fewshot"]
        _check_keys(f, FEWSHOT_KEYS, "fewshot")
        r = str(f.get("recipe", recipe))
        src_recipe = str(f.get("source_recipe", data.get("train", {}).get("recipe", recipe) if "train" in data else recipe))
        ov = _overrides(f, "fewshot")
        sources = tuple(str(s) for s in _list(f, "sources", "fewshot"))
        inits = [str(i) for i in _list(f, "inits", "fewshot", required=False)] or list(FEWSHOT_INITS)
        bad = [i for i in inits if i not in FEWSHOT_INITS and not (i.startswith("spot:") and i[5:] in sources)]
        if bad:
            raise PlanError(f"fewshot.inits: unknown {bad}; choose from {', '.join(FEWSHOT_INITS)} or spot:<source>")
        inits = [x for i in inits for x in ([f"spot:{s}" for s in sources] if i == "spot" else [i])]
        ks = [int(k) for k in _list(f, "k", "fewshot")]
        if any(k < 1 for k in ks):
            raise PlanError("fewshot.k: every k must be >= 1 (k = 0 trains nothing: evaluate the init with tpv eval)")
        kind = str(f.get("origin_kind", data.get("origin_kind", "vocab")))
        test_limit = f.get("test_limit")
        for b, target, k, init, s in itertools.product(
                _list(f, "backbones", "fewshot"), _list(f, "targets", "fewshot"), ks, inits,
                _seeds(_list(f, "seeds", "fewshot"), "fewshot.seeds")):
            plan.fewshot.append(Job("fewshot", str(b), str(target), s, r, ov, origin_kind=kind, k=k, init=init,
                                    sources=sources, source_recipe=src_recipe,
                                    test_limit=int(test_limit) if test_limit is not None else None, **common))
    if validate:
        _validate(plan)
    return plan


def _validate(plan: Plan) -> None:
    from tpv_core.backbones.registry import describe_backbone
    from tpv_core.tasks import get_task
    from tpv_core.tasks.data import SOURCES

    for job in plan.jobs:
        if job.source not in SOURCES:
            raise PlanError(f"source {job.source!r}: choose one of {', '.join(SOURCES)}")
        try:
            get_recipe(job.recipe)
            job.recipe_fields()
        except ValueError as e:
            raise PlanError(f"job {job.id}: {e}") from None
    for b in {j.backbone for j in plan.jobs}:
        try:
            describe_backbone(b)
        except Exception as e:
            raise PlanError(f"backbone {b!r}: {e}") from None
    for t in {j.task for j in plan.jobs} | {s for j in plan.fewshot for s in j.sources}:
        try:
            get_task(t)
        except Exception as e:
            raise PlanError(f"task {t!r}: {e}") from None


def load_plan(path: str | Path, validate: bool = True) -> Plan:
    """Read a YAML (or JSON) plan file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plan {path} not found")
    try:
        import yaml
    except ImportError:
        raise ImportError("grid plans are YAML: pip install pyyaml (or pip install -e '.[ray]')") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PlanError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, Mapping):
        raise PlanError(f"{path}: expected a mapping at the top (name, recipe, train, fewshot, ...)")
    return parse_plan(data, name=path.stem, validate=validate)
