"""``tpv grid PLAN.yaml``: run a plan of training (and few-shot) jobs locally or on Ray, resumably."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.cli.common import print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="run a grid plan (YAML) on local worker processes or on Ray")
    p.add_argument("plan", help="plan file (see docs/plans/demo.yaml)")
    p.add_argument("--store", default=None,
                   help="store root (default: the plan's 'store', else $TPV_STORE, else the project's data/zoo)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto (the running one) or ray://HOST:PORT (default: start a local Ray)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: per CPUs/GPUs)")
    p.add_argument("--retries", type=int, default=2, help="resubmit a failed job this many times (default 2)")
    p.add_argument("--force", action="store_true", help="rerun jobs whose prompt is stored already")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and which are stored, run nothing")
    p.add_argument("--out", default=None, help="also write the final table as CSV here")
    p.add_argument("--json", action="store_true", help="print the final table as JSON")
    p.set_defaults(func=cmd_grid)


def cmd_grid(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from tpv_core.atomic import atomic_write_text
    from tpv_core.grid import job_done, load_plan, make_executor, run_grid
    from tpv_core.paths import default_store_root
    from tpv_core.store import PromptStore

    plan = load_plan(args.plan)
    store = PromptStore(args.store or plan.store or default_store_root())
    if args.dry_run:
        rows = [{"job": j.id, "kind": j.kind, "recipe": j.recipe,
                 "stored": "yes" if job_done(store, j) is not None else "no"} for j in plan.jobs]
        if args.json:
            print(json.dumps({"plan": plan.name, "store": str(store.root), "jobs": rows}))
        else:
            import pandas as pd

            print_table(pd.DataFrame(rows))
        return 0
    jobs = plan.jobs
    res = {"num_cpus": jobs[0].num_cpus, "num_gpus": jobs[0].num_gpus} if jobs else {}
    executor = make_executor(args.executor, address=args.address, workers=args.workers, **res)
    print(f"grid {plan.name}: {len(jobs)} jobs into {store.root} on {executor.describe()}", file=sys.stderr, flush=True)
    bar = tqdm(total=len(jobs), desc=plan.name, unit="job", dynamic_ncols=True)
    counts = {"done": 0, "skipped": 0, "failed": 0, "retry": 0}

    def on_event(state, job, info):
        if state in counts:
            counts[state] += 1
            bar.set_postfix({k: v for k, v in counts.items() if v}, refresh=False)
        if state in ("done", "skipped", "failed"):
            bar.update(1)
        if state == "done":
            bar.write(f"done    {job.id}  {info.get('minutes', 0):.2f} min  val {info.get('val')}"
                      + (f"  test {info['test']:.4f}" if info.get("test") is not None else ""))
        elif state in ("retry", "failed"):
            bar.write(f"{state:7s} {job.id}: {info.get('error')}")

    try:
        report = run_grid(plan, store, executor, retries=args.retries, force=args.force, on_event=on_event)
    finally:
        bar.close()
        executor.close()
    if args.out:
        path = atomic_write_text(args.out, report.table.to_csv(index=False))
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"plan": plan.name, "executor": report.executor, "wall_s": round(report.wall_s, 1),
                          "jobs": report.table.to_dict(orient="records")}, default=str))
    else:
        print_table(report.table.drop(columns=["error"]).fillna(""))
        print(f"wall time {report.wall_s:.1f} s on {report.executor}")
        for f in report.failed:
            print(f"FAILED {f['job']} after {f['attempts']} attempts: {f['error']}")
    return 1 if report.failed else 0
