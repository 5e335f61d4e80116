"""``tpv train``: tune soft prompts for tasks x origins and store them (skips what the store has)."""

from __future__ import annotations

import argparse
import json
import sys

from tpv_core.cli.common import add_backbone_args, load_backbone_for_cli, parse_seeds, progress_bar
from tpv_core.prompts import make_origin
from tpv_core.store import PromptStore
from tpv_core.tasks import get_task
from tpv_core.training import TrainConfig, default_length, tune_prompt, tuned_readout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="tune soft prompts (tasks x origins) into a store")
    add_backbone_args(p)
    p.add_argument("--task", nargs="+", required=True, help="task name(s), see `tpv tasks list`")
    p.add_argument("--origin", nargs="*", default=["0"], help="origin seeds, e.g. 0 1 2 or 0-2 (default 0)")
    p.add_argument("--origin-kind", default="vocab", choices=["vocab", "normal", "uniform"])
    p.add_argument("--length", type=int, default=None, help="prompt length L (default per backbone family)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adafactor"])
    p.add_argument("--k-shot", type=int, default=None, help="train on k examples (stratified, seeded)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=100, help="validation rows scored during training")
    p.add_argument("--chat", action="store_true", help="wrap inputs in the model's chat template (decoders)")
    p.add_argument("--store", default="data/zoo", help="store root (default data/zoo)")
    p.add_argument("--force", action="store_true", help="retrain prompts the store already has")
    p.add_argument("--resume", action="store_true", help="continue stored prompts up to --steps")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(func=cmd_train)


def is_secondary_rank() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def cmd_train(args: argparse.Namespace) -> int:
    store = PromptStore(args.store)
    tasks = [get_task(t, args.store) for t in args.task]
    seeds = parse_seeds(args.origin) or [0]
    backbone = load_backbone_for_cli(args)
    length = args.length or default_length(backbone)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      k_shot=args.k_shot, data_seed=args.data_seed, eval_every=args.eval_every,
                      eval_limit=args.eval_limit, chat=args.chat)
    done = []
    for task in tasks:
        for seed in seeds:
            origin = make_origin(backbone, kind=args.origin_kind, seed=seed, length=length)
            exists = store.exists(backbone.name, task.name, origin.id)
            resume = None
            if exists and args.resume:
                resume = store.load(backbone.name, task.name, origin.id)
            elif exists and not args.force:
                have = tuned_readout(store.load(backbone.name, task.name, origin.id), task.name)
                if have in (None, backbone.readout(task)):
                    print(f"skip {task.name}/{origin.id}: already in {store.root} (--force to retrain)", file=sys.stderr)
                    continue
                print(f"retrain {task.name}/{origin.id}: the stored prompt was tuned for the {have!r} readout, "
                      f"{backbone.name} now reads {task.name} by {backbone.readout(task)!r}", file=sys.stderr)
            steps = cfg.resolved(backbone.family).steps
            bar = progress_bar(steps, f"{task.name} {origin.id}")
            if resume is not None:
                bar.update(int(resume.metadata.get("steps") or 0))

            def on_step(p, bar=bar):
                post = {"loss": f"{p.loss:.3f}"}
                if p.best_score is not None:
                    post["best_val"] = f"{p.best_score:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)

            result = tune_prompt(backbone, task, origin, cfg, progress=on_step, resume=resume,
                                 metadata={"command": "tpv " + " ".join(sys.argv[1:])})
            bar.close()
            if is_secondary_rank():
                continue  # under torchrun every rank holds the same prompt: rank 0 saves it
            path = store.save(result.prompt)
            done.append({"task": task.name, "origin": origin.id, "path": str(path), **result.prompt.metrics,
                         "steps": result.prompt.metadata["steps"], "wall_time_s": result.prompt.metadata["wall_time_s"]})
            if not args.json:
                print(f"saved {path}  best step {result.best_step}  {result.prompt.metrics}")
    if args.json:
        print(json.dumps({"backbone": backbone.name, "trained": done}))
    return 0
