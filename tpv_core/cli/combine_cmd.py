"""``tpv combine``: weighted sums (or TIES/DARE merges) of task prompt vectors, evaluated, stored, exported."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.cli.common import add_backbone_args, load_backbone_for_cli, print_table
from tpv_core.prompts import SoftPrompt
from tpv_core.store import PromptStore, export_soft_prompt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="combine task prompt vectors with weights and evaluate the result")
    add_backbone_args(p)
    p.add_argument("--store", default="data/zoo")
    p.add_argument("--vector", nargs="+", required=True, metavar="TASK[:SEED]",
                   help="vectors to combine, e.g. mnli:0 qnli:0 (seed default: --origin)")
    p.add_argument("--weights", nargs="*", type=float, default=None, help="one weight per vector (default 1 each)")
    p.add_argument("--method", default="sum", help="sum | ties | dare")
    p.add_argument("--origin", type=int, default=0, help="seed of the origin P0 the sum is applied to")
    p.add_argument("--eval", nargs="*", default=None, metavar="TASK", help="tasks to evaluate on (default: the vectors' tasks)")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--lambda-search", action="store_true",
                   help="scale the combination by one lambda chosen on validation (grid 0..1 step 0.05)")
    p.add_argument("--save-as", default=None, help="store the combined prompt under this task name")
    p.add_argument("--export", default=None, help="write the combined prompt as a PEFT adapter folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_combine)


def cmd_combine(args: argparse.Namespace) -> int:
    from tpv_core.combine import MERGE_METHODS, lambda_search
    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.experiments.common import stored_prompts
    from tpv_core.tasks import get_task

    store = PromptStore(args.store)
    bb = load_backbone_for_cli(args)
    if args.method not in MERGE_METHODS:
        raise ValueError(f"unknown method {args.method!r}; one of {', '.join(MERGE_METHODS)}")
    weights = args.weights or [1.0] * len(args.vector)
    if len(weights) != len(args.vector):
        raise ValueError(f"{len(weights)} weights for {len(args.vector)} vectors")
    vectors, singles = [], {}
    for spec in args.vector:
        name, _, seed = spec.partition(":")
        task = get_task(name, args.store)
        seed_i = int(seed) if seed else args.origin
        found = stored_prompts(store, bb, task, [seed_i])
        if seed_i not in found:
            raise FileNotFoundError(f"no stored {task.name} prompt from origin seed {seed_i} for {bb.name} in {store.root}")
        vectors.append(found[seed_i].vector())
        singles[task.name] = found[seed_i]
    origin_prompts = stored_prompts(store, bb, get_task(vectors[0].tasks[0], args.store), [args.origin])
    if args.origin not in origin_prompts:
        raise FileNotFoundError(f"origin seed {args.origin} not found among stored {vectors[0].tasks[0]} prompts")
    origin = origin_prompts[args.origin].origin
    tau = MERGE_METHODS[args.method](vectors, weights)
    eval_tasks = [get_task(t, args.store) for t in (args.eval or list(dict.fromkeys(t for v in vectors for t in v.tasks)))]
    prepared = {t.name: prepare_split(bb, t, args.split, limit=args.limit) for t in eval_tasks}

    coef = 1.0
    if args.lambda_search:
        val = {t.name: prepare_split(bb, t, "validation", limit=200) for t in eval_tasks}
        coef, _ = lambda_search(lambda lam: sum(evaluate(bb, t, tau.apply_to(origin, lam), val[t.name]).main
                                                for t in eval_tasks) / len(eval_tasks))
        print(f"lambda = {coef:g} (best mean validation score)", file=sys.stderr)
    combined = tau.apply_to(origin, coef)
    rows = []
    for t in eval_tasks:
        res = evaluate(bb, t, combined, prepared[t.name])
        row = {"task": t.name, "combined": res.main}
        if t.name in singles:
            row["single"] = evaluate(bb, t, singles[t.name].tensor, prepared[t.name]).main
        rows.append(row)
    label = f"{args.method}:{tau.label}" + (f" (lambda {coef:g})" if coef != 1.0 else "")
    if args.save_as or args.export:
        meta = {"source": "combination", "combination": {"method": args.method, "terms": tau.terms, "lambda": coef,
                                                         "label": label}, "backbone_model_id": bb.model_id,
                "backbone_family": bb.family, "metrics": {f"{args.split}_{r['task']}": r["combined"] for r in rows}}
        prompt = SoftPrompt(combined, origin, args.save_as or "combination", bb.name, meta)
        if args.save_as:
            print(f"saved {store.save(prompt)}", file=sys.stderr)
        if args.export:
            print(f"wrote PEFT adapter {export_soft_prompt(prompt, args.export, family=bb.family)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"combination": label, "origin": origin.id, "split": args.split, "results": rows}))
    else:
        import pandas as pd

        print(f"{label} applied to {origin.id} ({args.split})")
        print_table(pd.DataFrame(rows))
    return 0
