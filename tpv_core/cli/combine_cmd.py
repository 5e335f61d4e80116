"""``tpv combine``: weighted sums (or TIES/DARE merges) of task prompt vectors, evaluated, stored, exported
(the combination workflow, shared with the app's Combine page)."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.cli.common import (
    add_backbone_args,
    add_store_arg,
    finite_float,
    load_backbone_for_cli,
    positive_int,
    print_table,
)
from tpv_core.store import PromptExistsError, PromptStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="combine task prompt vectors with weights and evaluate the result")
    add_backbone_args(p)
    add_store_arg(p)
    p.add_argument("--vector", nargs="+", required=True, metavar="TASK[:SEED]",
                   help="vectors to combine, e.g. mnli:0 qnli:0 (seed default: --origin)")
    p.add_argument("--weights", nargs="*", type=finite_float, default=None,
                   help="one weight per vector (default 1 each)")
    p.add_argument("--method", default="sum", help="sum | ties | dare")
    p.add_argument("--origin", type=int, default=0, help="seed of the origin P0 the sum is applied to")
    p.add_argument("--length", type=positive_int, default=None, metavar="L",
                   help="combine the stored prompts of L soft tokens (default: the one length stored, else the "
                        "family's default L, with a note)")
    p.add_argument("--eval", nargs="*", default=None, metavar="TASK", help="tasks to evaluate on (default: the vectors' tasks)")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--lambda-search", action="store_true",
                   help="scale the combination by one lambda chosen on validation (grid 0..1 step 0.05)")
    p.add_argument("--save-as", default=None, help="store the combined prompt under this task name")
    p.add_argument("--force", action="store_true", help="with --save-as: replace a stored prompt of that name")
    p.add_argument("--export", default=None, help="write the combined prompt as a PEFT adapter folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_combine)


def cmd_combine(args: argparse.Namespace) -> int:
    from tpv_core.combine import MERGE_METHODS, lambda_search
    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.experiments.common import stored_prompts
    from tpv_core.tasks import get_task
    from tpv_core.workflows.combination import combine_prompts, resolve_vectors, save_combination

    store = PromptStore(args.store)
    if args.method not in MERGE_METHODS:
        raise ValueError(f"unknown method {args.method!r}; one of {', '.join(MERGE_METHODS)}")
    weights = args.weights or [1.0] * len(args.vector)  # finite: --weights parses with finite_float
    if len(weights) != len(args.vector):
        raise ValueError(f"{len(weights)} weights for {len(args.vector)} vectors")
    bb = load_backbone_for_cli(args)
    prompts = resolve_vectors(store, bb, args.vector, args.origin, args.store, args.length)
    first = get_task(prompts[0].task, args.store)
    origin_prompts = stored_prompts(store, bb, first, [args.origin], prompts[0].length)
    if args.origin not in origin_prompts:
        raise FileNotFoundError(f"origin seed {args.origin} not found among stored {first.name} prompts")
    origin = origin_prompts[args.origin].origin
    if args.save_as and not args.force and store.exists(bb.name, args.save_as.strip(), origin.id):
        target = store.path_for(bb.name, args.save_as.strip(), origin.id)
        raise PromptExistsError(f"{target} exists: the store already holds {args.save_as!r} from origin {origin.id}; "
                                "pass --force to replace it or choose another --save-as name")  # before evaluating
    singles = {}
    for p in prompts:  # each vector's own tuned prompt, for comparison
        singles.setdefault(p.task, p)
    eval_tasks = [get_task(t, args.store) for t in (args.eval or list(dict.fromkeys(p.task for p in prompts)))]
    prepared = {t.name: prepare_split(bb, t, args.split, limit=args.limit) for t in eval_tasks}

    coef = 1.0
    if args.lambda_search:
        base = combine_prompts(prompts, weights, origin, method=args.method)
        val = {t.name: prepare_split(bb, t, "validation", limit=200) for t in eval_tasks}
        coef, _ = lambda_search(lambda lam: sum(evaluate(bb, t, base.tau.apply_to(origin, lam), val[t.name]).main
                                                for t in eval_tasks) / len(eval_tasks))
        print(f"lambda = {coef:g} (best mean validation score)", file=sys.stderr)
    combo = combine_prompts(prompts, weights, origin, method=args.method, coef=coef)
    rows = []
    for t in eval_tasks:
        res = evaluate(bb, t, combo.tensor, prepared[t.name])
        row = {"task": t.name, "combined": res.main}
        if t.name in singles:
            row["single"] = evaluate(bb, t, singles[t.name].tensor, prepared[t.name]).main
        rows.append(row)
    combo.scores[args.split] = {r["task"]: r["combined"] for r in rows}
    if args.save_as:
        print(f"saved {save_combination(store, combo, args.save_as, bb, overwrite=args.force)}", file=sys.stderr)
    if args.export:
        from tpv_core.peft_io import export_soft_prompt

        out = export_soft_prompt(combo.as_prompt(args.save_as or combo.default_name(), bb), args.export,
                                 family=bb.family)
        print(f"wrote PEFT adapter {out}", file=sys.stderr)
    if args.json:
        print(json.dumps({"combination": combo.label, "method": args.method, "lambda": coef, "origin": origin.id,
                          "split": args.split, "results": rows}))
    else:
        import pandas as pd

        print(f"{combo.label}  ({args.split})")
        print_table(pd.DataFrame(rows))
    return 0
