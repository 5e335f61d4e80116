"""``tpv experiment``: the paper's three experiments (cross-origin, addition, few-shot) and negation, on the
prompt store."""

from __future__ import annotations

import argparse
import sys

from tpv_core.cli.common import (
    add_backbone_args,
    add_data_args,
    add_store_arg,
    bind_data,
    eval_limit_arg,
    finite_float,
    load_backbone_for_cli,
    non_negative_int,
    parse_seeds,
    positive_int,
    print_table,
    progress_bar,
)
from tpv_core.store import PromptStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="cross-origin, addition, few-shot (tables + figures)")
    s = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    s.required = True

    def common(q: argparse.ArgumentParser) -> None:
        add_backbone_args(q)
        add_store_arg(q)
        q.add_argument("--origin", nargs="*", default=None, help="origin seeds (default: every stored one)")
        q.add_argument("--length", type=positive_int, default=None, metavar="L",
                       help="read the stored prompts of L soft tokens (default: the one length stored, else the "
                            "family's default L, with a note)")
        q.add_argument("--split", default="test", choices=["validation", "test"])
        q.add_argument("--limit", type=positive_int, default=None, help="score the first N (shuffled) rows of the split")
        q.add_argument("--batch-size", type=positive_int, default=32)
        q.add_argument("--out", required=True, help="output folder (re-running resumes from its CSV)")
        add_data_args(q)

    co = s.add_parser("cross-origin", help="P0(o1) + tau(o2) for every origin pair (Table 1)")
    common(co)
    co.add_argument("--tasks", nargs="+", required=True)
    co.set_defaults(func=cmd_cross_origin)

    ad = s.add_parser("addition", help="P0 + lambda * sum of task prompt vectors of task sets (Fig. 2)")
    common(ad)
    ad.add_argument("--tasks", nargs="+", required=True)
    ad.add_argument("--set-size", type=positive_int, default=2, help="tasks per combination (2 = pairs)")
    ad.add_argument("--grid", type=finite_float, nargs="*", default=None, help="lambda grid (default 0..1 step 0.05)")
    ad.add_argument("--val-limit", type=positive_int, default=200, help="validation rows for the lambda search")
    ad.add_argument("--methods", nargs="+", default=["sum"],
                    help="merge methods to compare, each with its own lambda: sum (the paper) ties dare")
    ad.set_defaults(func=cmd_addition)

    ln = s.add_parser("length", help="source prompts and their TPV sum on a target's inputs cut to several lengths")
    common(ln)
    ln.add_argument("--target", required=True)
    ln.add_argument("--sources", nargs="+", required=True)
    ln.add_argument("--max-lengths", nargs="+", type=positive_int, default=[32, 64, 128, 512],
                    help="input tokens kept per row (the first ones)")
    ln.set_defaults(func=cmd_length)

    ng = s.add_parser("negation", help="P0 + tau_c - coef * tau_t: does negating t hurt t and spare c?")
    common(ng)
    ng.add_argument("--tasks", nargs="+", required=True)
    ng.add_argument("--coef", type=finite_float, default=1.0, help="how much of the negated vector to subtract")
    ng.set_defaults(func=cmd_negation)

    fs = s.add_parser("fewshot", help="few-shot initialisation of a target task (Fig. 3)")
    common(fs)
    fs.add_argument("--target", required=True)
    fs.add_argument("--sources", nargs="+", required=True)
    fs.add_argument("--k", nargs="+", type=non_negative_int, default=None, help="shots (default 0 5 10 25 50 100 250 500 1000)")
    fs.add_argument("--data-seeds", nargs="+", default=None,
                    help="seeds that draw the k rows and the batch order, crossed with the origins: every "
                         "(origin, data seed) is one paired cell shared by all inits (default: the origin's seed)")
    fs.add_argument("--inits", nargs="+", default=None, help="random spot multitask tpv (default all)")
    fs.add_argument("--steps", type=non_negative_int, default=None, help="training steps for every init (same budget)")
    fs.add_argument("--lr", type=finite_float, default=None)
    fs.add_argument("--batch-size-train", type=positive_int, default=None)
    fs.add_argument("--eval-limit", type=eval_limit_arg, default=None,
                    help="validation rows for best-prompt selection, or 'all' (default: 200; the paper recipe: all)")
    fs.add_argument("--recipe", default="demo", choices=["demo", "paper"],
                    help="training recipe of every init (explicit --steps / --lr / ... override its fields)")
    fs.add_argument("--epochs", type=finite_float, default=None, help="budget in passes over the k examples")
    fs.set_defaults(func=cmd_fewshot)


def _report(result) -> int:
    print_table(result.summary)
    for note in result.notes:
        print(f"note: {note}")
    for f in result.files:
        print(f"wrote {f}")
    return 0


def _bound(args: argparse.Namespace, names: list[str]) -> list:
    """Task specs bound to --source / --data-dir (the experiments take specs as well as names)."""
    from tpv_core.tasks import get_task

    return [bind_data(args, get_task(n, args.store)) for n in names]


def _say(msg: str) -> None:
    from tpv_core import distributed

    if distributed.is_main():  # under torchrun: rank 0 speaks
        print(msg, file=sys.stderr, flush=True)


def cmd_cross_origin(args: argparse.Namespace) -> int:
    from tpv_core.experiments.cross_origin import run_cross_origin

    bb = load_backbone_for_cli(args)
    res = run_cross_origin(bb, PromptStore(args.store), _bound(args, args.tasks), args.out,
                           seeds=parse_seeds(args.origin) or None, length=args.length,
                           split=args.split, limit=args.limit, batch_size=args.batch_size, progress=_say)
    return _report(res)


def cmd_addition(args: argparse.Namespace) -> int:
    from tpv_core.experiments.addition import DEFAULT_GRID, run_addition

    bb = load_backbone_for_cli(args)
    res = run_addition(bb, PromptStore(args.store), _bound(args, args.tasks), args.out,
                       seeds=parse_seeds(args.origin) or None, length=args.length,
                       set_size=args.set_size, methods=args.methods, grid=args.grid or DEFAULT_GRID,
                       split=args.split, val_limit=args.val_limit, limit=args.limit, batch_size=args.batch_size,
                       progress=_say)
    return _report(res)


def cmd_length(args: argparse.Namespace) -> int:
    from tpv_core.experiments.length import run_length

    bb = load_backbone_for_cli(args)
    target, *sources = _bound(args, [args.target, *args.sources])
    res = run_length(bb, PromptStore(args.store), target, sources, args.out, max_lengths=args.max_lengths,
                     seeds=parse_seeds(args.origin) or None, length=args.length, split=args.split, limit=args.limit,
                     batch_size=args.batch_size, progress=_say)
    return _report(res)


def cmd_negation(args: argparse.Namespace) -> int:
    from tpv_core.experiments.negation import run_negation

    bb = load_backbone_for_cli(args)
    res = run_negation(bb, PromptStore(args.store), _bound(args, args.tasks), args.out,
                       seeds=parse_seeds(args.origin) or None, length=args.length,
                       coef=args.coef, split=args.split, limit=args.limit, batch_size=args.batch_size, progress=_say)
    return _report(res)


def cmd_fewshot(args: argparse.Namespace) -> int:
    from tpv_core.experiments.fewshot import DEFAULT_KS, INITS
    from tpv_core.workflows.fewshot import FewshotRequest, run_fewshot_request

    req = FewshotRequest(target=args.target, sources=args.sources, out=args.out, store_root=args.store,
                         ks=args.k or DEFAULT_KS, seeds=parse_seeds(args.origin) or None, length=args.length,
                         data_seeds=parse_seeds(args.data_seeds, "--data-seeds") or None, inits=args.inits or INITS,
                         steps=args.steps, lr=args.lr, train_batch_size=args.batch_size_train,
                         eval_limit=args.eval_limit or (200 if args.recipe == "demo" else "all"), split=args.split,
                         limit=args.limit, batch_size=args.batch_size, strict_ks=args.k is not None,
                         recipe=args.recipe, epochs=args.epochs, source=args.source, data_dir=args.data_dir)
    bb = load_backbone_for_cli(args)
    bar = None

    def on_run(p) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(p.total, f"few-shot {req.target}")
            bar.unit = "run"
            bar.update(p.done)
        elif p.row is not None:
            bar.set_postfix({"last": f"k={p.row['k']} {p.row['init']} {p.row['score']:.3f}"}, refresh=False)
            bar.update(1)

    try:
        res = run_fewshot_request(bb, req, on_run=on_run,
                                  progress=lambda m: bar.write(m) if bar is not None else _say(m))
    finally:
        if bar is not None:
            bar.close()
    return _report(res)
