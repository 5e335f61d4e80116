"""What runs on a worker: one job in, the stored prompt's bytes out (no shared filesystem needed).

`run_job` takes a plain dict (a `Job` as a dict, plus ``init``: safetensors bytes of a start tensor for
few-shot jobs, ``threads`` and ``device``) and returns a plain dict: the prompt file's bytes, its
validation metric, the few-shot test score, and the minutes it took. A worker process keeps the
backbones it loaded (one per name and device) so its later jobs skip the load.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from typing import Any

import torch


@functools.lru_cache(maxsize=2)
def _backbone(name: str, device: str | None):
    from tpv_core.backbones import load_backbone

    return load_backbone(name, device=device)


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load as st_load

    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.prompts import SoftPrompt, make_origin
    from tpv_core.recipes import recipe_metadata, train_config
    from tpv_core.store import serialize
    from tpv_core.tasks import get_task
    from tpv_core.tasks.sources import with_source
    from tpv_core.training import default_length, tune_prompt

    t0 = time.perf_counter()
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    backbone = _backbone(spec["backbone"], spec.get("device"))
    task = with_source(get_task(spec["task"]), spec.get("source", "auto"), spec.get("data_dir"))
    overrides = dict(spec.get("overrides") or {})
    fewshot = spec["kind"] == "fewshot"
    cfg, length = train_config(spec["recipe"], overrides, k_shot=spec.get("k") if fewshot else None,
                               data_seed=int(spec["seed"]) if fewshot else 0)
    origin = make_origin(backbone, kind=spec.get("origin_kind", "vocab"), seed=int(spec["seed"]),
                         length=length or default_length(backbone))
    init = st_load(spec["init_bytes"])["init"] if spec.get("init_bytes") is not None else None
    meta = {"recipe": recipe_metadata(spec["recipe"], overrides),
            "grid": {"job": spec.get("id"), "plan": spec.get("plan"), "host": socket.gethostname()}}
    if fewshot:
        meta["fewshot"] = {"target": task.name, "k": spec["k"], "init": spec["init"], "sources": list(spec["sources"])}
    result = tune_prompt(backbone, task, origin, cfg, init=init, metadata=meta)
    prompt = result.prompt
    out: dict[str, Any] = {"val": next(iter(prompt.metrics.values()), None), "steps": prompt.metadata.get("steps")}
    if fewshot:
        test = prepare_split(backbone, task, "test", limit=spec.get("test_limit"))
        ev = evaluate(backbone, task, prompt.tensor, test)
        prompt.metadata["fewshot"].update(test_n=ev.n, test_metrics=ev.metrics)
        out["test"] = ev.main
        prompt = SoftPrompt(prompt.tensor, prompt.origin, spec["store_task"], prompt.backbone, prompt.metadata)
    out.update(bytes=serialize(prompt), backbone=prompt.backbone, task=prompt.task, origin=prompt.origin.id,
               minutes=(time.perf_counter() - t0) / 60, worker=f"{socket.gethostname()}:{os.getpid()}")
    return out
