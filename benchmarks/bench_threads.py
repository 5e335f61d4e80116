"""OpenMP wait policy on a shared machine: libgomp's default (threads spin at barriers) against
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep). Must be set before torch loads, so each contender is a
child process, A/B interleaved; each child loads the backbone and times training steps (B=8,
L=20, sst2 rows, ``Backbone.loss`` + backward) on torch's default thread count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any, Callable

CHILD = r"""
import json, statistics, sys, time, torch
from benchmarks.common import task_batches, train_step_fn
from tpv_core.backbones import load_backbone
bb = load_backbone(sys.argv[1])
task, batches = task_batches(bb, "sst2", 1, int(sys.argv[3]))
fn = train_step_fn(bb, task.label_set(), batches)
fn()
ts = [fn()["s"] for _ in range(int(sys.argv[2]))]
print("RESULT " + json.dumps({"step_s": statistics.median(ts), "all": ts, "threads": torch.get_num_threads()}))
"""


def _child(model: str, policy: str | None, steps: int, batch: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, model, str(steps), str(batch)], env=env, text=True,
                           capture_output=True, timeout=timeout,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        return {"step_s": None, "timeout_s": timeout}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"step_s": None, "error": (p.stderr or "")[-400:]}


def bench_threads(models: list[str], *, rounds: int, steps: int = 3, batch: int = 8, timeout: float = 240,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        runs: dict[str, list] = {"spin (default)": [], "PASSIVE": []}
        for r in range(rounds):
            for name, pol in (("spin (default)", None), ("PASSIVE", "PASSIVE")):
                res = _child(model, pol, steps, batch, timeout)
                runs[name].append(res)
                log(f"    round {r + 1}/{rounds} {model} {name}: {res.get('step_s')}")
        med = {k: statistics.median([x["step_s"] for x in v if x.get("step_s")] or [float("nan")])
               for k, v in runs.items()}
        pairs = [a["step_s"] / b["step_s"] for a, b in zip(runs["spin (default)"], runs["PASSIVE"])
                 if a.get("step_s") and b.get("step_s")]
        out[model] = {"step_s": med, "passive_speedup": statistics.median(pairs) if pairs else None,
                      "batch": batch, "steps": steps, "rounds": rounds, "raw": runs}
        log(f"  {model}: spin {med['spin (default)']:.3f} s/step, PASSIVE {med['PASSIVE']:.3f} s/step")
    return out
