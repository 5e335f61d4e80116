"""``tpv probe``: linear probes of a frozen backbone (what it separates before any prompt is tuned)."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.cli.common import (
    add_backbone_args,
    add_data_args,
    add_store_arg,
    bind_data,
    finite_float,
    load_backbone_for_cli,
    positive_int,
    print_table,
)
from tpv_core.probe import VIEWS, probe_tasks, probe_views
from tpv_core.tasks import get_task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear probe of the frozen backbone's features per task (no prompt)")
    add_backbone_args(p)
    p.add_argument("--task", nargs="+", required=True)
    p.add_argument("--views", nargs="+", default=["readout"], choices=list(VIEWS),
                   help="readout: the formatted input where the family reads its answer; pair: the two text "
                        "fields encoded apart, [u, v, |u-v|, u*v]; cosine: only the cosine of u and v "
                        "(pair and cosine: two-field tasks only)")
    p.add_argument("--train-limit", type=positive_int, default=1000, help="training rows for the probe (shuffled, seeded)")
    p.add_argument("--limit", type=positive_int, default=500, help="held-out rows scored")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--c", type=finite_float, default=0.01, help="inverse L2 strength of the logistic regression")
    p.add_argument("--chat", action="store_true", help="wrap inputs in the model's chat template (decoders)")
    add_store_arg(p)
    p.add_argument("--json", action="store_true")
    add_data_args(p)
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    tasks = [bind_data(args, get_task(name, args.store)) for name in args.task]  # unknown tasks fail before the model loads
    backbone = load_backbone_for_cli(args)
    for task in tasks:
        skipped = [v for v in args.views if v not in probe_views(task, args.views)]
        if skipped:
            print(f"{task.name}: one text field, {' and '.join(skipped)} view(s) skipped", file=sys.stderr)
    out = [r.as_dict() for r in probe_tasks(backbone, tasks, args.views, train_limit=args.train_limit,
                                            eval_limit=args.limit, eval_split=args.split, seed=args.seed,
                                            c=args.c, chat=args.chat, progress=lambda m: print(m, file=sys.stderr))]
    if args.json:
        print(json.dumps({"backbone": backbone.name, "results": out}))
        return 0
    import pandas as pd

    print_table(pd.DataFrame(out))
    return 0
