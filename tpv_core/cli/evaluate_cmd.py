"""``tpv eval``: score stored prompts (or the untuned origin, or no prompt) on a task split."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tpv_core import distributed
from tpv_core.cli.common import (
    add_backbone_args,
    add_data_args,
    add_store_arg,
    bind_data,
    load_backbone_for_cli,
    parse_seeds,
    positive_int,
    print_table,
)
from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.prompts import make_origin
from tpv_core.store import PromptStore, StoreError
from tpv_core.tasks import get_task
from tpv_core.training import check_readout, default_length


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score stored prompts, the untuned origin, or no prompt on a split")
    add_backbone_args(p)
    p.add_argument("--task", nargs="+", required=True)
    p.add_argument("--origin", nargs="*", default=None, help="origin seeds (default: every stored origin)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N rows (shuffled, seeded)")
    add_store_arg(p)
    p.add_argument("--untuned", action="store_true", help="score the origin P0 itself (needs --origin)")
    p.add_argument("--no-prompt", action="store_true", help="score the plain model, no soft prompt")
    p.add_argument("--length", type=positive_int, default=None, help="origin length for --untuned")
    p.add_argument("--origin-kind", default="vocab", choices=["vocab", "normal", "uniform"])
    p.add_argument("--method", default="rank", choices=["rank", "generate"])
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--json", action="store_true")
    add_data_args(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    store = PromptStore(args.store)
    backbone = load_backbone_for_cli(args)
    rows_out = []
    for name in args.task:
        task = bind_data(args, get_task(name, args.store))
        prepared = prepare_split(backbone, task, args.split, limit=args.limit)
        jobs = []  # (label, origin id, tensor)
        if args.no_prompt:
            jobs.append(("no prompt", "-", None))
        elif args.untuned:
            seeds = parse_seeds(args.origin) or [0]
            length = args.length or default_length(backbone)
            for s in seeds:
                o = make_origin(backbone, kind=args.origin_kind, seed=s, length=length)
                jobs.append(("untuned", o.id, o.tensor))
        else:
            skipped: list[str] = []
            df = store.index(backbone=backbone.name, task=task.name, errors=skipped)
            for note in skipped:
                print(f"skipped: {note}", file=sys.stderr)
            if args.origin:
                wanted = {str(s) for s in parse_seeds(args.origin)}
                df = df[df["seed"].astype(str).isin(wanted) | df["origin"].isin(args.origin)]
            if df.empty:
                bad = [n for n in skipped if f"/{task.name}/" in n]
                if bad:
                    raise StoreError(f"the stored {task.name} prompt(s) for {backbone.name} cannot be read: {bad[0]}")
                raise FileNotFoundError(
                    f"no stored {task.name} prompt for {backbone.name} in {store.root}; train one with "
                    f"`tpv train --backbone {backbone.name} --task {task.name}` or pass --untuned"
                )
            for oid in df["origin"]:
                try:
                    stored = store.load(backbone.name, task.name, oid)
                except StoreError as exc:  # e.g. a checksum mismatch: skip it, score the others
                    print(f"skipped: {exc}", file=sys.stderr)
                    skipped.append(str(exc))
                    continue
                jobs.append(("tuned", oid, check_readout(stored, backbone, task).tensor))
            if not jobs:
                raise StoreError(f"none of the stored {task.name} prompts for {backbone.name} can be read: {skipped[-1]}")
        for kind, oid, tensor in jobs:
            res = evaluate(backbone, task, tensor, prepared, batch_size=args.batch_size, method=args.method)
            rows_out.append({"task": task.name, "prompt": kind, "origin": oid, "split": args.split, "n": res.n,
                             "method": args.method, **res.metrics})
            if not args.json and distributed.is_main():
                print(f"{task.name} {kind} {oid}: " + ", ".join(f"{k}={v:.4f}" for k, v in res.metrics.items()),
                      file=sys.stderr)
    if args.json:
        print(json.dumps({"backbone": backbone.name, "results": rows_out}))
        return 0
    import pandas as pd

    df = pd.DataFrame(rows_out)
    print_table(df)
    metric_cols = [c for c in df.columns if c not in ("task", "prompt", "origin", "split", "n", "method")]
    if len(df) > len(df.groupby(["task", "prompt"])):
        agg = df.groupby(["task", "prompt"])[metric_cols].agg(["mean", "std"]).reset_index()
        agg.columns = [" ".join(c).strip() if isinstance(c, tuple) else c for c in agg.columns]
        print("\nmean / std over origins:")
        print_table(agg.replace({np.nan: 0.0}))
    return 0
