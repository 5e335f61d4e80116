"""Small helpers shared by the CLI command modules."""

from __future__ import annotations

import pandas as pd


def print_table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> None:
    """Print a DataFrame as an aligned plain-text table."""
    if df.empty:
        print("(empty)")
        return
    cells = [[str(c) for c in df.columns]]
    for row in df.itertuples(index=False):
        cells.append([floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for i, r in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def add_store_arg(p, *, positional: bool = False) -> None:
    """``--store`` with the one default rule (``$TPV_STORE``, else the project's ``data/zoo``, wherever the
    command runs from). ``positional=True`` also accepts the root as an optional first argument (the form
    ``tpv store list ROOT`` that older scripts use)."""
    from tpv_core.paths import default_store_root

    help_ = "store root (default: $TPV_STORE, else the project's data/zoo)"
    if positional:
        p.add_argument("root", nargs="?", default=None, help="store root, same as --store")
        p.add_argument("--store", default=None, help=help_)
        p.set_defaults(_store_positional=True)
    else:
        p.add_argument("--store", default=None, help=help_)
    p.set_defaults(_store_default=default_store_root)


def resolve_store(args) -> None:
    """Fill ``args.store`` (and ``args.root`` for commands that take it positionally) by the one rule."""
    if not hasattr(args, "_store_default"):
        return
    root = getattr(args, "root", None) if getattr(args, "_store_positional", False) else None
    if root and args.store and root != args.store:
        raise ValueError(f"two store roots given: {root!r} and --store {args.store!r}; give one")
    args.store = root or args.store or args._store_default()
    if getattr(args, "_store_positional", False):
        args.root = args.store


def add_backbone_args(p, required: bool = True) -> None:
    p.add_argument("--backbone", required=required, help="model name (see `tpv models list`) or hub id or folder")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="frozen model compute precision (auto: bf16 where the CPU/GPU supports it)")


def load_backbone_for_cli(args):
    """Load the backbone named on the command line, telling the user what happens (first-time conversions)."""
    import sys

    from tpv_core import distributed
    from tpv_core.backbones import load_backbone

    def notify(msg: str) -> None:
        if distributed.is_main():
            print(f"[{args.backbone}] {msg}", file=sys.stderr, flush=True)

    ctx = distributed.current()  # under torchrun: the device of this rank's LOCAL_RANK, chosen at set-up
    device = str(ctx.device) if ctx.distributed else args.device
    backbone = load_backbone(args.backbone, device=device, precision=args.precision, notify=notify)
    if getattr(args, "gradient_checkpointing", False):
        backbone.enable_gradient_checkpointing()
    if getattr(args, "compile", False):
        backbone.compile()
    return backbone


def parse_seeds(values, flag: str = "--origin") -> list[int]:
    """Seeds from `--origin 0 1 2`, `--origin 0-2` or `--origin 0,1`; a clear error naming a bad one (and the
    option ``flag`` it came from)."""
    seeds: list[int] = []
    for v in values or []:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1)
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ValueError
                    seeds.extend(range(lo, hi + 1))
                else:
                    seeds.append(int(part))
            except ValueError:
                raise ValueError(f"{flag} {part!r} is not a seed: give whole numbers (0 1 2), a range (0-2) "
                                 "or a comma list (0,1)") from None
    return list(dict.fromkeys(seeds))


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan / inf)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (nan and inf are refused)")
    return value


def _int_at_least(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is below {low}; give a whole number >= {low}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _int_at_least(text, 1)


def progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    from tpv_core import distributed

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True,
                disable=not distributed.is_main())  # under torchrun: one bar, rank 0's


def add_data_args(p) -> None:
    """``--source`` and ``--data-dir``: where task data is read from (see tpv_core.tasks.sources)."""
    p.add_argument("--source", default="auto", choices=["auto", "bundled", "hub"],
                   help="task data: auto (bundled subset when the task ships one, else the hub), bundled, hub (full sets)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="full local copies: DIR/<task>/ with train/validation/test as JSONL, CSV or Parquet, or a "
                        "datasets save_to_disk folder (the flag form of TPV_DATA_DIR)")


def bind_data(args, task):
    """``task`` bound to the command line's ``--source`` / ``--data-dir``."""
    from tpv_core.tasks.sources import with_source

    return with_source(task, getattr(args, "source", "auto"), getattr(args, "data_dir", None))


def eval_limit_arg(value: str):
    """``--eval-limit N`` or ``all`` (the whole validation split)."""
    if str(value).lower() == "all":
        return "all"
    n = int(value)
    if n < 1:
        raise ValueError(f"--eval-limit must be a positive number of rows or 'all', got {value}")
    return n
