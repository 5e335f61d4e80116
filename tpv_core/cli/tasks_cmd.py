"""``tpv tasks``: the task registry (built-in and custom tasks)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from tpv_core.cli.common import add_store_arg, finite_float, print_table
from tpv_core.tasks import describe_task, list_tasks, make_custom_task, register_custom_task
from tpv_core.tasks.registry import stored_prompts_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list tasks or add a custom task")
    s = p.add_subparsers(dest="tasks_command", metavar="ACTION")
    s.required = True
    ls = s.add_parser("list", help="list the known tasks")
    add_store_arg(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    add = s.add_parser("add", help="register a custom task from a CSV/JSONL file or a folder of splits")
    add.add_argument("name")
    add.add_argument("--file", required=True, help="CSV or JSONL file, or a folder with train/validation/test files")
    add.add_argument("--text-field", nargs="+", required=True, help="text column(s), in order")
    add.add_argument("--label-field", required=True)
    add.add_argument("--label-description", nargs="*", default=None,
                     help="one description per label (sorted label order), for encoder backbones")
    add.add_argument("--label-word", nargs="*", default=None, help="one verbaliser per label (sorted label order)")
    add.add_argument("--similarity-target", nargs="+", type=finite_float, default=None,
                     help="two text fields only: one target cosine per label (sorted label order), e.g. 0 1 for "
                          "different / same; the encoder then reads the class from the cosine of the two fields")
    add.add_argument("--family", default="classification")
    add_store_arg(add)
    add.add_argument("--replace", action="store_true",
                     help="redefine a registered task whose labels or data differ (names the prompts it orphans)")
    add.set_defaults(func=cmd_add)


def cmd_list(args: argparse.Namespace) -> int:
    rows = [describe_task(t) for t in list_tasks(args.store)]
    if args.json:
        print(json.dumps({"tasks": rows}, default=str))
        return 0
    df = pd.DataFrame(rows)
    cols = [c for c in ("name", "title", "family", "labels", "metrics", "source") if c in df.columns]
    df = df[cols].copy()
    for c in ("labels", "metrics"):
        if c in df.columns:
            df[c] = df[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
            if c == "labels":
                df[c] = df[c].map(lambda v: v if len(str(v)) < 50 else str(v)[:47] + "...")
    print_table(df)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    spec = make_custom_task(args.name, args.file, tuple(args.text_field), args.label_field,
                            label_descriptions=args.label_description, label_words=args.label_word,
                            family=args.family, similarity_targets=args.similarity_target)
    orphans = stored_prompts_of(spec.name, args.store) if args.replace else []
    stored = register_custom_task(spec, args.store, replace=args.replace)
    print(f"registered task {stored.name!r} ({stored.num_labels} labels: {', '.join(map(str, stored.label_names))}) "
          f"in {stored.data_dir}")
    if orphans:
        print(f"note: {len(orphans)} stored prompt(s) were tuned on the previous definition of {stored.name!r} and "
              "may no longer fit it (retrain them with `tpv train --force`): " + ", ".join(orphans))
    return 0
