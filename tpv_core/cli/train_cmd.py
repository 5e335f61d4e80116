"""``tpv train``: tune soft prompts for tasks x origins into a store (the train workflow; skips what the
store has, retrains prompts tuned under another readout)."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.checkpoint import checkpoint_path
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
    progress_bar,
)
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task
from tpv_core.training import training_rows
from tpv_core.workflows.train import RESUME, RETRAIN, TrainEvent, is_secondary_rank, plan_training, train_into_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="tune soft prompts (tasks x origins) into a store")
    add_backbone_args(p)
    p.add_argument("--task", nargs="+", required=True, help="task name(s), see `tpv tasks list`")
    p.add_argument("--origin", nargs="*", default=["0"], help="origin seeds, e.g. 0 1 2 or 0-2 (default 0)")
    p.add_argument("--origin-kind", default="vocab", choices=["vocab", "normal", "uniform"])
    p.add_argument("--recipe", default="demo", choices=["demo", "paper"],
                   help="training recipe: demo (CPU defaults) or paper (L=100, lr 0.3, 500 warmup steps, batch 32, "
                        "10 epochs, selection on the whole validation split); explicit flags override its fields")
    p.add_argument("--length", type=positive_int, default=None, help="prompt length L (default: the recipe's / family's)")
    p.add_argument("--steps", type=non_negative_int, default=None,
                   help="training steps (replaces the recipe's epoch budget)")
    p.add_argument("--epochs", type=finite_float, default=None, help="budget in passes over the training rows")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=finite_float, default=None)
    p.add_argument("--warmup-steps", type=non_negative_int, default=None, help="linear warmup steps (default: the recipe's)")
    p.add_argument("--warmup-ratio", type=finite_float, default=None,
                   help="linear warmup as a share of the steps, e.g. 0.1 = the first of 10 epochs (replaces the "
                        "recipe's fixed warmup steps)")
    p.add_argument("--weight-decay", type=finite_float, default=None)
    p.add_argument("--max-length", type=positive_int, default=None, help="input tokens kept per example")
    p.add_argument("--optimizer", default=None, choices=["adamw", "adafactor"])
    p.add_argument("--k-shot", type=positive_int, default=None, help="train on k examples (stratified, seeded)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--eval-every", type=positive_int, default=None)
    p.add_argument("--eval-limit", type=eval_limit_arg, default=None,
                   help="validation rows scored during training, or 'all' (default: the recipe's: demo 100, paper all)")
    p.add_argument("--patience", type=positive_int, default=None, metavar="N",
                   help="stop once N validations in a row bring no new best (the step budget is the cap; "
                        "default: the whole budget)")
    add_data_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration (recipe, fields, data source, row counts, steps) and stop, "
                        "without loading the model")
    p.add_argument("--chat", action="store_true", help="wrap inputs in the model's chat template (decoders)")
    add_store_arg(p)
    p.add_argument("--force", action="store_true", help="retrain prompts the store already has")
    p.add_argument("--resume", action="store_true",
                   help="continue from a checkpoint left by a killed run, or a stored prompt up to --steps "
                        "(a finished prompt is left as it is)")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=25, metavar="N",
                   help="save a resumable checkpoint every N steps beside the store (0: none; removed at the end)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute block activations in the backward pass (less memory, ~1/3 more compute)")
    p.add_argument("--compile", action="store_true", help="torch.compile each transformer block (GPUs)")
    p.set_defaults(func=cmd_train)


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe fields given explicitly on the command line (None = not given)."""
    return {"length": args.length, "lr": args.lr, "optimizer": args.optimizer, "weight_decay": args.weight_decay,
            "warmup_steps": args.warmup_steps, "warmup_ratio": args.warmup_ratio, "batch_size": args.batch_size,
            "max_length": args.max_length, "epochs": args.epochs, "steps": args.steps, "eval_limit": args.eval_limit,
            "eval_every": args.eval_every, "patience": args.patience}


def cmd_dry_run(args: argparse.Namespace, tasks: list) -> int:
    from tpv_core.recipes import resolve_run

    runs = [resolve_run(args.backbone, task, args.recipe, recipe_overrides(args), k_shot=args.k_shot,
                        data_seed=args.data_seed, chat=args.chat).as_dict() for task in tasks]
    seeds = parse_seeds(args.origin) or [0]
    for r in runs:
        r["origins"] = seeds
    if args.json:
        print(json.dumps(runs[0] if len(runs) == 1 else {"runs": runs}, indent=1))
        return 0
    for r in runs:
        f = r["fields"]
        print(f"recipe {r['recipe']}: {r['description']}\nbackbone {r['backbone']['name']} (family {r['family']})\n"
              f"task {r['task']}: data {r['data']['source']} {r['data'].get('path') or r['data'].get('hub_id')}, "
              f"rows {r['data']['rows']}\n"
              f"L={f['length']} lr={f['lr']} {f['optimizer']} wd={f['weight_decay']} warmup={f['warmup_steps']} "
              f"batch={f['batch_size']} max_length={f['max_length']} epochs={f['epochs']}\n"
              f"steps {r['steps']} ({r['steps_per_epoch']} per epoch), validation every {r['eval_every']} steps, "
              f"{f['selection']}; origins {seeds}")
        for note in r["notes"]:
            print(f"note: {note}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tpv_core.recipes import train_config

    if args.force and args.resume:
        raise ValueError("--force (retrain from the origin) and --resume (continue the stored prompt) exclude "
                         "each other; pick one")
    tasks = [bind_data(args, get_task(t, args.store)) for t in args.task]
    if args.dry_run:
        return cmd_dry_run(args, tasks)
    store = PromptStore(args.store)
    seeds = parse_seeds(args.origin) or [0]
    cfg, length = train_config(args.recipe, recipe_overrides(args), k_shot=args.k_shot,
                               data_seed=args.data_seed, chat=args.chat)
    backbone = load_backbone_for_cli(args)
    # an epoch budget gives each task its own step count (from its rows)
    task_steps = {t.name: cfg.resolved(backbone.family, train_rows=len(training_rows(t, cfg))
                                       if cfg.epochs and cfg.steps is None else None).steps for t in tasks}
    plan = [item for t in tasks
            for item in plan_training(backbone, store, [t], seeds, length=length, origin_kind=args.origin_kind,
                                      force=args.force, resume=args.resume, steps=task_steps[t.name])]
    quiet = is_secondary_rank()
    bars: dict[int, object] = {}
    done: list[dict] = []

    def on_event(e: TrainEvent) -> None:
        it = e.item
        if quiet:
            return
        if e.kind == "skip":
            print(f"skip {it.task.name}/{it.origin.id}: {it.reason} (--force to retrain)", file=sys.stderr)
        elif e.kind == "start":
            if it.action in (RETRAIN, RESUME) and it.reason:
                print(f"{it.action} {it.task.name}/{it.origin.id}: {it.reason}", file=sys.stderr)
            ckpt = checkpoint_path(store.path_for(backbone.name, it.task.name, it.origin.id))
            if ckpt.exists() and args.checkpoint_every and args.resume:
                print(f"continue {it.task.name}/{it.origin.id} from the checkpoint of an interrupted run ({ckpt})",
                      file=sys.stderr)
            elif ckpt.exists() and args.checkpoint_every:
                print(f"note: {it.task.name}/{it.origin.id} has a checkpoint from an interrupted run ({ckpt}); "
                      "starting over (pass --resume to continue it)", file=sys.stderr)
            bar = bars[e.index] = progress_bar(task_steps[it.task.name], f"{it.task.name} {it.origin.id}")
        elif e.kind == "step":
            bar, p = bars[e.index], e.progress
            post = {"loss": f"{p.loss:.3f}"}
            if p.best_score is not None:
                post["best_val"] = f"{p.best_score:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(p.step - bar.n)  # a resumed run starts past 0
        elif e.kind == "saved":
            bars.pop(e.index).close()
            prompt = e.result.prompt
            done.append({"task": it.task.name, "origin": it.origin.id, "path": e.path, **prompt.metrics,
                         "steps": prompt.metadata["steps"], "stopped_early": bool(prompt.metadata.get("stopped_early")),
                         "wall_time_s": prompt.metadata["wall_time_s"]})
            if not args.json:
                stop = (f"  stopped at step {prompt.metadata['steps']}: no new best in {cfg.patience} validations"
                        if prompt.metadata.get("stopped_early") else "")
                print(f"saved {e.path}  best step {e.result.best_step}  {prompt.metrics}{stop}")

    train_into_store(backbone, store, plan, cfg, metadata={"command": "tpv " + " ".join(sys.argv[1:])},
                     on_event=on_event, checkpoint_every=args.checkpoint_every, resume_checkpoints=args.resume)
    for bar in bars.values():  # secondary ranks, or an item that did not reach "saved"
        bar.close()
    if args.json and not quiet:
        print(json.dumps({"backbone": backbone.name, "trained": done}))
    return 0
