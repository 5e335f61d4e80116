"""``tpv store``: list and verify the prompt library, export prompts or combinations as PEFT adapters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tpv_core.cli.common import add_store_arg, finite_float, print_table
from tpv_core.peft_io import export_soft_prompt
from tpv_core.store import PromptStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="the prompt library on disk")
    s = p.add_subparsers(dest="store_command", metavar="ACTION")
    s.required = True

    ls = s.add_parser("list", help="list the prompts under a store root")
    add_store_arg(ls, positional=True)
    ls.add_argument("--backbone")
    ls.add_argument("--task")
    ls.add_argument("--origin", help="origin id or seed")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.add_argument("--norms", action="store_true",
                    help="add the L2 norms of each prompt's origin P0 and task prompt vector tau, and "
                         "||tau|| / ||P0|| (reads every tensor)")
    ls.set_defaults(func=cmd_list)

    ex = s.add_parser("export", help="export a stored prompt as a PEFT prompt-tuning adapter directory")
    add_store_arg(ex, positional=True)
    ex.add_argument("--backbone", required=True)
    ex.add_argument("--task", required=True)
    ex.add_argument("--origin", required=True, help="origin id (see `tpv store list`) or seed")
    ex.add_argument("--out", required=True, help="adapter directory to write")
    ex.add_argument("--family", default=None, help="decoder | seq2seq | encoder (default: from the backbone)")
    ex.set_defaults(func=cmd_export)

    vf = s.add_parser("verify", help="check every stored file in full (schema, folder, checksums, finite values)")
    vf.add_argument("root", help="store root folder, e.g. data/zoo")
    vf.add_argument("--fix-missing", action="store_true",
                    help="add checksums to files written before they existed (tensors and metadata unchanged)")
    vf.add_argument("--stale-after", type=finite_float, default=60.0, metavar="MINUTES",
                    help="remove temp files of interrupted saves older than this (default 60)")
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(func=cmd_verify)


def cmd_list(args: argparse.Namespace) -> int:
    store = PromptStore(args.root)
    errors: list[str] = []
    df = store.index(args.backbone, args.task, args.origin, errors=errors)
    if args.norms and not df.empty:
        df = with_norms(store, df, errors)
    if args.json:
        print(json.dumps({"root": str(store.root), "prompts": df.drop(columns=["path"]).to_dict("records"),
                          "errors": errors}, default=str))
        return 0
    if not Path(args.root).is_dir():
        print(f"no prompts: {args.root} does not exist yet (train some with `tpv train`)")
        return 0
    if df.empty:
        print(f"no prompts in {args.root}" + (" matching the filters" if (args.backbone or args.task or args.origin) else ""))
    else:
        cols = ["backbone", "task", "origin", "recipe", "steps"] + [c for c in df.columns if c.startswith("metric_")] + \
            [c for c in ("p0_norm", "tau_norm", "tau_over_p0") if c in df.columns]
        shown = df[cols].astype(object)
        print_table(shown.where(shown.notna(), "-"))  # "-": not recorded (a prompt from before the field)
        print(f"{len(df)} prompt(s) in {args.root}")
    for err in errors:
        print(f"skipped: {err}")
    return 0


def with_norms(store: PromptStore, df, errors: list[str]):
    """``df`` with ``p0_norm``, ``tau_norm`` and ``tau_over_p0`` per prompt (None where the origin cannot be
    rebuilt; a damaged file is named in ``errors``)."""
    from tpv_core.store import StoreError

    norms = []
    for backbone, task, origin in zip(df["backbone"], df["task"], df["origin"]):
        try:
            prompt = store.load(backbone, task, origin)
            p0, tau = float(prompt.origin.require_tensor().norm()), float(prompt.vector().tensor.norm())
            norms.append({"p0_norm": p0, "tau_norm": tau, "tau_over_p0": tau / p0 if p0 else None})
        except (StoreError, ValueError) as exc:
            errors.append(f"{backbone}/{task}/{origin}: no norms ({exc})")
            norms.append({"p0_norm": None, "tau_norm": None, "tau_over_p0": None})
    return df.assign(**{k: [n[k] for n in norms] for k in ("p0_norm", "tau_norm", "tau_over_p0")})


def resolve_origin_id(store: PromptStore, backbone: str, task: str, origin: str) -> str:
    df = store.index(backbone, task, origin)
    if df.empty:
        raise FileNotFoundError(f"no stored prompt for backbone={backbone} task={task} origin={origin} in {store.root}")
    return str(df["origin"].iloc[0])


def cmd_export(args: argparse.Namespace) -> int:
    store = PromptStore(args.root)
    origin_id = resolve_origin_id(store, args.backbone, args.task, args.origin)
    prompt = store.load(args.backbone, args.task, origin_id)
    family = args.family or prompt.metadata.get("backbone_family") or "decoder"
    out = export_soft_prompt(prompt, args.out, family=family)
    print(f"wrote PEFT adapter {out} ({prompt.length} x {prompt.dim}, task {prompt.task}, origin {origin_id})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every stored file is good (``ok`` or ``fixed``), 1 when some are bad or lack checksums."""
    from tpv_core.store_verify import verify_store

    if args.stale_after < 0:
        raise ValueError(f"--stale-after must be >= 0 minutes, got {args.stale_after:g}")
    items = verify_store(args.root, fix_missing=args.fix_missing, stale_after_s=args.stale_after * 60)
    counts = {status: sum(1 for i in items if i.status == status) for status in
              ("ok", "fixed", "no-checksum", "bad", "removed-tmp", "checkpoint")}
    if args.json:
        print(json.dumps({"root": args.root, "counts": counts, "items": [i.as_dict() for i in items]}))
    else:
        for item in items:
            if item.status != "ok":
                print(f"{item.status}: {item.path}" + (f"  ({item.message})" if item.message else ""))
        print(", ".join(f"{n} {k}" for k, n in counts.items() if n) or f"no prompts in {args.root}")
    return 1 if counts["bad"] or counts["no-checksum"] else 0
