"""The grid driver: skip what is stored, hand jobs to an executor, retry failures, write every result.

Resumable: a job whose prompt is in the store with the same recipe (name and fields after overrides)
and origin (kind, seed, length) is skipped. Train jobs run first; few-shot jobs then start from the
stored source prompts (the driver computes each start tensor and sends it as bytes). Each result comes
back as the prompt file's bytes, which the driver checks (safetensors, header, shapes) and writes
atomically into the store. A failed job is resubmitted up to ``retries`` times; jobs that still fail are
listed with their last error. Returns a table: job, state, attempts, minutes, validation score.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from tpv_core.grid.plan import Job, Plan
from tpv_core.store import PromptStore, load_prompt, read_metadata, safe_name

Event = Callable[[str, Job, dict[str, Any]], None]  # (state, job, info): submitted / done / retry / failed / skipped


@dataclass
class GridReport:
    table: pd.DataFrame
    wall_s: float
    executor: str
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _length(job: Job, recipe_fields: dict[str, Any]) -> int:
    if recipe_fields.get("length"):
        return int(recipe_fields["length"])
    from tpv_core.backbones.registry import describe_backbone
    from tpv_core.training import FAMILY_DEFAULTS

    family = describe_backbone(job.backbone).get("family") or "decoder"
    return int(FAMILY_DEFAULTS[family]["length"])


def store_backbone_name(name: str) -> str:
    """The backbone name a prompt is stored under (a folder: its resolved path, as `load_backbone` names it)."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.is_dir() else name


def find_stored(store: PromptStore, backbone: str, task: str, kind: str, seed: int, length: int,
                recipe: str | None = None, fields: dict[str, Any] | None = None) -> Path | None:
    """The stored prompt for (backbone, task, origin kind/seed/length), made with ``recipe`` (and the same
    recipe fields when both sides recorded them); None when there is none."""
    folder = store.root / safe_name(store_backbone_name(backbone)) / safe_name(task)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.safetensors")):
        if path.name.startswith("."):
            continue
        try:
            meta = read_metadata(path)
        except Exception:
            continue  # an unreadable file is retrained, and replaced
        o = meta.get("origin") or {}
        if (o.get("kind"), o.get("seed"), meta.get("length")) != (kind, seed, length):
            continue
        if recipe is not None:
            stored = meta.get("recipe") or {}
            name = stored.get("name") or (meta.get("training") or {}).get("recipe") or "demo"
            if name != recipe:
                continue
            if fields is not None and stored.get("fields") is not None and not _same_fields(stored["fields"], fields):
                continue
        return path
    return None


def _same_fields(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """A stored prompt's recipe fields against a job's: a field the prompt's library did not know yet (absent from
    its metadata) matches when the job leaves it unset (None)."""
    stored = json.loads(json.dumps(stored))
    return stored == {k: v for k, v in wanted.items() if k in stored or v is not None}


def job_done(store: PromptStore, job: Job) -> Path | None:
    fields = job.recipe_fields()
    return find_stored(store, job.backbone, job.store_task, job.origin_kind, job.seed, _length(job, fields),
                       job.recipe, fields)


def _stored_other(store: PromptStore, job: Job) -> Path | None:
    """A stored prompt at this job's place (same backbone, task, origin) whatever its recipe."""
    return find_stored(store, job.backbone, job.store_task, job.origin_kind, job.seed,
                       _length(job, job.recipe_fields()))


def _init_bytes(store: PromptStore, job: Job) -> bytes | None:
    """The start tensor of a few-shot job, from the stored source prompts (None = the origin itself)."""
    if job.init == "random":
        return None
    from safetensors.torch import save as st_save

    from tpv_core.prompts import TaskPromptVector
    from tpv_core.recipes import apply_overrides, get_recipe

    src_fields, _ = apply_overrides(get_recipe(job.source_recipe or job.recipe))
    length = _length(job, job.recipe_fields())
    names = [job.init[5:]] if job.init.startswith("spot:") else list(job.sources)
    prompts = []
    for s in names:
        path = find_stored(store, job.backbone, s, job.origin_kind, job.seed, length, job.source_recipe)
        if path is None:
            raise FileNotFoundError(f"few-shot {job.id}: no stored {s} prompt on {job.backbone} from origin seed "
                                    f"{job.seed} (L={length}, recipe {job.source_recipe}); add {s} to the plan's train "
                                    f"section")
        prompts.append(load_prompt(path))
    tensor = prompts[0].tensor if job.init.startswith("spot:") else \
        TaskPromptVector.sum([p.vector() for p in prompts]).apply_to(prompts[0].origin)
    return st_save({"init": tensor.detach().float().contiguous()})


def write_result(store: PromptStore, result: dict[str, Any], overwrite: bool = False) -> Path:
    """Check the returned prompt file (schema, checksums, finite values: `load_prompt`) and save it into the
    store under the target's lock (`PromptStore.save`: atomic, no silent overwrite)."""
    with tempfile.TemporaryDirectory(prefix="tpv-grid-") as tmp:
        incoming = Path(tmp) / "incoming.safetensors"
        incoming.write_bytes(result["bytes"])
        prompt = load_prompt(incoming)
    return store.save(prompt, overwrite=overwrite)


def run_grid(plan: Plan, store: PromptStore, executor: Any, *, retries: int = 2, force: bool = False,
             on_event: Event | None = None) -> GridReport:
    """Run ``plan`` on ``executor`` into ``store``; see the module docstring."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    t0 = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    say = on_event or (lambda state, job, info: None)

    def row(job: Job, **kw: Any) -> None:
        r = rows.setdefault(job.id, {"job": job.id, "kind": job.kind, "state": "pending", "attempts": 0,
                                     "minutes": None, "val": None, "test": None, "error": None})
        r.update(kw)

    def phase(jobs: list[Job]) -> None:
        pending: dict[Any, Job] = {}
        specs: dict[str, dict[str, Any]] = {}
        for job in jobs:
            row(job)
            if not force and (found := job_done(store, job)) is not None:
                meta = read_metadata(found)
                row(job, state="skipped", val=next(iter((meta.get("metrics") or {}).values()), None),
                    test=((meta.get("fewshot") or {}).get("test_metrics") or {}).get("main"))
                say("skipped", job, {"path": str(found)})
                continue
            if not force and (other := _stored_other(store, job)) is not None:
                row(job, state="failed", error=f"{other} holds this prompt made with another recipe; "
                                                 "pass --force to replace it, or use another store")
                say("failed", job, {"error": rows[job.id]["error"]})
                continue
            try:
                spec = {**job.as_dict(), "plan": plan.name, "store_task": job.store_task}
                if job.kind == "fewshot":
                    spec["init_bytes"] = _init_bytes(store, job)
            except Exception as e:  # a missing source prompt: this job cannot start
                row(job, state="failed", error=f"{type(e).__name__}: {e}")
                say("failed", job, {"error": str(e)})
                continue
            specs[job.id] = spec
            pending[executor.submit(spec)] = job
            row(job, state="running", attempts=1)
            say("submitted", job, {})
        while pending:
            for handle, ok, value in executor.wait(list(pending)):
                job = pending.pop(handle)
                if ok:
                    try:
                        path = write_result(store, value, overwrite=force)
                    except Exception as e:
                        ok, value = False, f"returned prompt rejected: {type(e).__name__}: {e}"
                    else:
                        row(job, state="done", minutes=round(value["minutes"], 3), val=value.get("val"),
                            test=value.get("test"), error=None)
                        say("done", job, {"path": str(path), **{k: v for k, v in value.items() if k != "bytes"}})
                        continue
                attempts = rows[job.id]["attempts"]
                if attempts <= retries:
                    row(job, attempts=attempts + 1, error=value)
                    say("retry", job, {"error": value, "attempt": attempts + 1})
                    pending[executor.submit(specs[job.id])] = job
                else:
                    row(job, state="failed", error=value)
                    say("failed", job, {"error": value})

    phase(plan.train)
    phase(plan.fewshot)
    table = pd.DataFrame(list(rows.values()), columns=["job", "kind", "state", "attempts", "minutes", "val", "test",
                                                       "error"])
    failed = table[table["state"] == "failed"][["job", "attempts", "error"]].to_dict(orient="records")
    return GridReport(table, time.perf_counter() - t0, executor.describe(), failed)
