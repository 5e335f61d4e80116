"""``tpv models``: the model providers, and a quick check that one loads and scores."""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from tpv_core.cli.common import load_backbone_for_cli, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model providers or check one")
    s = p.add_subparsers(dest="models_command", metavar="ACTION")
    s.required = True
    ls = s.add_parser("list", help="providers and whether they work offline")
    ls.add_argument("--all", action="store_true", help="include the random test models")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    ck = s.add_parser("check", help="load a model, print family, width, precision and one scored batch's time")
    ck.add_argument("name")
    ck.add_argument("--device", default=None)
    ck.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ck.set_defaults(func=cmd_check)


def cmd_list(args: argparse.Namespace) -> int:
    from tpv_core.backbones import list_providers

    rows = [
        {"name": p.name, "family": p.family, "model_id": p.model_id,
         "offline": "yes" if p.offline_available else "no", "description": p.description}
        for p in list_providers(include_test=args.all)
    ]
    if args.json:
        print(json.dumps({"providers": rows}))
    else:
        print_table(pd.DataFrame(rows))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import torch

    from tpv_core.prompts import make_origin
    from tpv_core.tasks import get_task, load_split

    from pathlib import Path

    from tpv_core.backbones.family import detect_folder

    args.backbone = args.name
    if Path(args.name).expanduser().is_dir():  # say what config.json says before loading the weights
        found = detect_folder(args.name)
        print(f"detected:   family {found.family} from config.json (model_type {found.model_type}, "
              f"architectures {', '.join(found.architectures) or 'none'})", flush=True)
    t0 = time.perf_counter()
    bb = load_backbone_for_cli(args)
    load_s = time.perf_counter() - t0
    task = get_task("sst2")
    rows = load_split(task, "validation")[:8]
    batch = bb.batch([bb.format(task, r) for r in rows])
    origin = make_origin(bb, seed=0, length=20)
    with torch.no_grad():
        bb.label_scores(batch, origin.tensor, task.label_set())  # warm-up
        t1 = time.perf_counter()
        scores = bb.label_scores(batch, origin.tensor, task.label_set())
        score_s = time.perf_counter() - t1
    precision = "bf16 autocast" if bb.compute_dtype == torch.bfloat16 else "fp32"
    print(f"name:       {bb.name}\nmodel:      {bb.model_id} ({bb.revision})\nfamily:     {bb.family}\n"
          f"width d:    {bb.dim}\nvocabulary: {bb.vocab_size}\ndevice:     {bb.device}\nprecision:  {precision}\n"
          f"load:       {load_s:.1f} s\nscored batch of {len(rows)} (sst2, L=20): {score_s * 1000:.0f} ms, "
          f"scores shape {tuple(scores.shape)}")
    return 0
