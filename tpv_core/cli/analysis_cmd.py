"""``tpv similarity`` and ``tpv project``: look at stored task prompt vectors from the terminal.

``tpv similarity ROOT`` prints the task x task cosine matrix (mean over origin pairs) per backbone and
definition, the correlation of task geometry between backbones, and writes the tidy tables and heatmaps.
``tpv project ROOT`` writes a 2-D UMAP (or PCA) projection as CSV + HTML (+ PNG where Chromium is).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from tpv_core.cli.common import add_store_arg, positive_int, print_table

FIG_FORMATS = ("html", "png", "svg")
ALL_FORMATS = ("csv", *FIG_FORMATS)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("similarity", help="cosine similarity of task prompt vectors across tasks, origins, backbones",
                       description="Cosine similarity of stored task prompt vectors (tau = P - P0) or prompts, "
                                   "aggregated per task pair over origins; with several backbones also the "
                                   "correlation of their task geometry (Mantel test).")
    add_store_arg(s, positional=True)
    s.add_argument("--backbone", nargs="+", default=None, help="only these backbones (default: all)")
    s.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all)")
    s.add_argument("--length", type=positive_int, default=None,
                   help="only prompts of L soft tokens (default: the one length stored; where a backbone has "
                        "several, its family's default L, with a note)")
    s.add_argument("--definition", default="flat", choices=["flat", "token-mean", "both"],
                   help="flat: cosine of the flattened L x d tensors; token-mean: cosine of the mean over the "
                        "L rows (default: flat)")
    s.add_argument("--of", dest="of", default="vectors", choices=["vectors", "prompts"],
                   help="compare task prompt vectors tau = P - P0 (default) or the prompts P")
    s.add_argument("--same-origin", default="exclude", choices=["exclude", "include", "only"],
                   help="pairs from the same origin: exclude (default), include, or only those")
    s.add_argument("--per-origin", action="store_true", help="also print/write the item x item (task/origin) matrix")
    s.add_argument("--permutations", type=positive_int, default=1000, help="Mantel permutations for the geometry p-value")
    s.add_argument("--out", default=None, help="folder for the CSV tables and heatmaps")
    s.add_argument("--format", default="csv,html", help="comma-separated: csv, html, png, svg (default csv,html)")
    s.set_defaults(func=cmd_similarity)

    p = sub.add_parser("project", help="2-D UMAP or PCA projection of task prompt vectors",
                       description="Project stored task prompt vectors (flattened) to 2-D, one projection per "
                                   "backbone. UMAP uses the cosine metric and a fixed seed; tiny sets fall back "
                                   "to PCA.")
    add_store_arg(p, positional=True)
    p.add_argument("--method", default="umap", choices=["umap", "pca"])
    p.add_argument("--backbone", nargs="+", default=None)
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--length", type=positive_int, default=None,
                   help="only prompts of L soft tokens (default as for `tpv similarity`)")
    p.add_argument("--of", dest="of", default="vectors", choices=["vectors", "prompts"])
    p.add_argument("--n-neighbors", type=positive_int, default=15)
    p.add_argument("--seed", type=int, default=0, help="UMAP random_state")
    p.add_argument("--out", default=None, help="folder for projection.csv / .html (/ .png)")
    p.add_argument("--format", default="csv,html,png", help="comma-separated: csv, html, png, svg (default csv,html,png;"
                                                           " PNG/SVG are skipped with a note when Chromium is missing)")
    p.set_defaults(func=cmd_project)


def _formats(text: str) -> list[str]:
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ALL_FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(ALL_FORMATS)}")
    return fmts


def _load(args: argparse.Namespace):
    """Stored prompts matching the filters; prints skipped files. None (after a message) when there are none."""
    from tpv_core.store import PromptStore, load_prompt

    root = Path(args.root)
    if not root.is_dir():
        print(f"no prompts: {root} does not exist (train some with `tpv train`)", file=sys.stderr)
        return None
    errors: list[str] = []
    df = PromptStore(root).index(errors=errors)
    for err in errors:
        print(f"skipped: {err}", file=sys.stderr)
    if df.empty:
        print(f"no prompts in {root}", file=sys.stderr)
        return None
    if args.backbone:
        missing = sorted(set(args.backbone) - set(df["backbone"]))
        if missing:
            raise ValueError(f"no prompts for backbone(s) {', '.join(missing)} in {root}; "
                             f"stored: {', '.join(sorted(df['backbone'].unique()))}")
        df = df[df["backbone"].isin(args.backbone)]
    if args.tasks:
        missing = sorted(set(args.tasks) - set(df["task"]))
        if missing:
            raise ValueError(f"no prompts for task(s) {', '.join(missing)} in {root}"
                             + (f" on {', '.join(args.backbone)}" if args.backbone else "")
                             + f"; stored: {', '.join(sorted(df['task'].unique()))}")
        df = df[df["task"].isin(args.tasks)]
    df = _one_length(df, args.length, root)
    prompts = []
    for path in df["path"]:
        try:
            prompts.append(load_prompt(path))
        except (ValueError, OSError) as exc:
            print(f"skipped: {exc}", file=sys.stderr)
    if not prompts:
        print(f"no prompts in {root} matching the filters", file=sys.stderr)
        return None
    return prompts


def _one_length(df: pd.DataFrame, length: int | None, root: Path) -> pd.DataFrame:
    """The index rows of one prompt length per backbone (an origin is a seed and a length: the demo prompts and
    paper-recipe ones of a task are different origins): ``length`` when given, else `pick_length`'s choice."""
    from tpv_core.backbones.registry import describe_backbone
    from tpv_core.experiments.common import pick_length
    from tpv_core.training import FAMILY_DEFAULTS

    if length is not None:
        if not (df["length"] == length).any():
            raise ValueError(f"no prompts of length L = {length} in {root} matching the filters; stored: "
                             f"L = {', '.join(map(str, sorted(set(df['length']))))}")
        return df[df["length"] == length]
    keep = []
    for backbone, rows in df.groupby("backbone", sort=False):
        try:
            family = describe_backbone(backbone).get("family")
        except Exception:  # a stored backbone name this machine cannot resolve: no family default
            family = None
        default = FAMILY_DEFAULTS[family]["length"] if family in FAMILY_DEFAULTS else None
        keep.append(rows[rows["length"] == pick_length(rows["length"], default, f"the prompts of {backbone}")])
    return pd.concat(keep) if keep else df


def _print_matrix(mat: pd.DataFrame) -> None:
    print_table(mat.reset_index().rename(columns={mat.index.name or "index": "task"}), floatfmt="{:.3f}")


def cmd_similarity(args: argparse.Namespace) -> int:
    from tpv_core import plots
    from tpv_core import similarity as sim
    from tpv_core.atomic import atomic_write_bytes
    from tpv_core.store import safe_name
    from tpv_core.workflows.analysis import geometry_table, task_similarity

    fmts = _formats(args.format)
    prompts = _load(args)
    if prompts is None:
        return 1
    what = "vector" if args.of == "vectors" else "prompt"
    items = sim.collect(prompts, what)
    zeros = sim.zero_items(items)
    if zeros:
        print(f"note: {len(zeros)} all-zero {what}(s), cosine undefined (nan): "
              f"{', '.join(f'{z.backbone}:{z.label}' for z in zeros)}"
              + (" (the stored prompt is its origin: tuning never beat it on validation)" if what == "vector" else ""),
              file=sys.stderr)
    defs = list(sim.DEFINITIONS) if args.definition == "both" else [args.definition]
    result = task_similarity(items, defs, same_origin=args.same_origin)
    table, agg = result.pairs, result.by_task
    out = Path(args.out) if args.out else None
    written: list[Path] = []
    skipped: list[str] = []
    noun = "task prompt vectors (tau = P - P0)" if what == "vector" else "prompts P"
    pairs_note = {"exclude": "pairs from different origins", "include": "all pairs", "only": "same-origin pairs"}
    backbones = list(dict.fromkeys(it.backbone for it in items))
    figures: dict = {}

    for bb in backbones:
        n_items = sum(it.backbone == bb for it in items)
        for d in defs:
            print(f"\n== {bb} · {d} cosine of {noun} · mean over {pairs_note[args.same_origin]} ({n_items} items)")
            if (bb, d) not in result.matrices:
                print("(fewer than two comparable items: nothing to compare)")
                continue
            m = result.matrices[(bb, d)]
            _print_matrix(m.mean)
            nz = m.n.to_numpy()
            print(f"pairs per cell: {int(nz.min())}..{int(nz.max())}")
            figures[f"similarity_{safe_name(bb)}_{d}"] = plots.heatmap(m.mean, title=f"{bb}: {d} cosine of {noun}",
                                                                      n=m.n, std=m.std)
            if args.per_origin:
                per = sim.per_item_matrix(items, d, backbone=bb)
                print(f"\n-- {bb} · {d} · per item (task/origin)")
                _print_matrix(per)
                figures[f"similarity_items_{safe_name(bb)}_{d}"] = plots.heatmap(
                    per, title=f"{bb}: {d} cosine per task/origin")
                if out is not None and "csv" in fmts:
                    written.append(atomic_write_bytes(out / f"similarity_items_{safe_name(bb)}_{d}.csv",
                                                      plots.export_table(per, index=True)))

    if len(backbones) >= 2:
        geo = geometry_table({k: m.mean for k, m in result.matrices.items()}, n_permutations=args.permutations)
        for row in geo.to_dict("records") if "note" in geo else []:
            if isinstance(row.get("note"), str):
                print(f"\ngeometry {row['backbone_a']} vs {row['backbone_b']} ({row['definition']}): {row['note']}")
        if "r" in geo:
            geo = geo[geo["r"].notna()]
            geo = geo.rename(columns={"r": f"{geo['method'].iloc[0]}_r"}).drop(columns=["method", "n_pairs", "note"],
                                                                             errors="ignore")
            print("\n== task geometry across backbones: Spearman r of the task x task matrices' upper triangles "
                  "(Mantel permutation p-value, one-sided)")
            print_table(geo.drop(columns=["tasks"]))
            if (geo["n_tasks"] <= 4).any():
                print("(with n shared tasks the smallest possible p is 1/n!: 1/6 for 3 tasks, 1/24 for 4)")
            if out is not None and "csv" in fmts:
                written.append(atomic_write_bytes(out / "similarity_geometry.csv", plots.export_table(geo)))
        for d in defs:
            side = result.means(d)
            if len(side) >= 2:
                figures[f"similarity_backbones_{d}"] = plots.heatmap_grid(side, title=f"{d} cosine of {noun}, per backbone")

    if out is not None and "csv" in fmts:
        written.append(atomic_write_bytes(out / "similarity_pairs.csv", plots.export_table(table)))
        written.append(atomic_write_bytes(out / "similarity_by_task.csv", plots.export_table(agg)))
    if out is not None and figures:
        files, skipped = plots.write_figures(figures, out, [f for f in fmts if f in FIG_FORMATS])
        written.extend(files)
    for msg in skipped:
        print(f"not written: {msg}", file=sys.stderr)
    if written:
        print(f"\nwrote {len(written)} file(s) to {out}:")
        for f in written:
            print(f"  {f.name}")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from tpv_core import plots
    from tpv_core.projection import project
    from tpv_core.similarity import collect
    from tpv_core.atomic import atomic_write_bytes

    fmts = _formats(args.format)
    prompts = _load(args)
    if prompts is None:
        return 1
    items = collect(prompts, "vector" if args.of == "vectors" else "prompt")
    if args.method == "umap":
        print("projecting with UMAP (the first fit in a process takes ~10-30 s to compile)...", file=sys.stderr)
    df, note = project(items, method=args.method, n_neighbors=args.n_neighbors, random_state=args.seed)
    print(note)
    if args.out is None:
        print_table(df[["panel", "task", "origin", "x", "y", "method"]], floatfmt="{:.3f}")
        return 0
    out = Path(args.out)
    written: list[Path] = []
    if "csv" in fmts:
        written.append(atomic_write_bytes(out / "projection.csv", plots.export_table(df)))
    what = "task prompt vectors" if args.of == "vectors" else "prompts"
    fig = plots.projection_scatter(df, title=f"{df['method'].iloc[0].upper() if df['method'].nunique() == 1 else 'UMAP/PCA'}"
                                             f" of {what}")
    files, skipped = plots.write_figures({"projection": fig}, out, [f for f in fmts if f in FIG_FORMATS])
    written.extend(files)
    for msg in skipped:
        print(f"not written: {msg}", file=sys.stderr)
    print(f"wrote {len(written)} file(s) to {out}: {', '.join(f.name for f in written)}")
    return 0
