"""Generate the tables of docs/REPRODUCTION.md from docs/results/, and check the report against them.

    python scripts/report_tables.py --check [--report docs/REPRODUCTION.md]   # exit 1 on any difference
    python scripts/report_tables.py --write [--report docs/REPRODUCTION.md]   # rewrite the marked blocks

Each generated table sits in the report between ``<!-- table:ID -->`` and ``<!-- /table:ID -->`` lines;
``TABLES`` maps ID to a generator ``fn(root) -> markdown``, registered with ``@table("ID")``. Every number
of a generated table comes from a file under docs/results/ or from ``PAPER`` (the paper's published
numbers). The machinery (registry, formatting, check, write) is in scripts/report_lib.py.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_lib import (  # noqa: E402  (the scripts folder is not a package)
    PAPER, REPORT, TABLES, check, md_table, name, num, one, pm, read_csv, read_results, table,
    write,
)
import report_findings  # noqa: E402,F401  (registers the tables of sections 1-3 and the readout and length checks)
import report_recipe  # noqa: E402,F401  (registers the tables of section 9, the recipe comparison)

__all__ = ["PAPER", "TABLES", "check", "main", "md_table", "name", "num", "one", "pm",
           "read_csv", "read_results", "table", "write"]

SOURCE_TASKS = ("dbpedia_14", "sst2", "yelp_polarity", "trec", "qnli", "mnli")
# MiniLM reads these two-field tasks by the cosine of the two fields: the tasks with similarity_targets in
# tpv_core/tasks/builtin.py (tests/test_report.py compares); every other task, CB included, by descriptions.
SIMILARITY_READOUT = {"mnli", "qnli", "snli", "scitail", "rte", "qqp", "mrpc", "stsb"}
PROBE_MARGIN = 5.0  # "learned?" = "yes" when the tuned mean is at most this many points below the probe


def metric_of(rows) -> str:
    """The score a task is read by: Pearson where the rows carry it (STS-B), accuracy otherwise."""
    return "pearson" if "pearson" in rows and rows["pearson"].notna().all() else "accuracy"


def label(task: str, metric: str) -> str:
    return name(task) + (" (Pearson)" if metric == "pearson" else "")


def in_order(tasks) -> list[str]:
    """Distinct tasks in order of appearance."""
    return list(dict.fromkeys(tasks))


# ------------------------------------------------------------------------------------ the zoo
def learned(tuned: float, t_std: float, untuned: float, u_std: float, runs: int,
            majority: float | None, probe: float) -> str:
    """The "learned?" rule, on the scores as printed (x100, one decimal); stated under the table."""
    se = lambda *stds: 2 * math.sqrt(sum(s * s for s in stds) / runs)  # noqa: E731
    if tuned - untuned <= se(t_std, u_std):
        return "no"
    if majority is not None and tuned - majority <= se(t_std):
        return "not above the majority rate"
    return "yes" if tuned >= probe - PROBE_MARGIN else "partly"


@table("zoo")
def zoo_table(root: Path) -> str:
    tuned = read_results(root, "minilm-l6/zoo_eval_tuned.json")
    untuned = read_results(root, "minilm-l6/zoo_eval_untuned.json")
    probes = read_results(root, "probe/minilm-l6_test.json", "probe/minilm-l6_test_cosine.json",
                          "probe/minilm-l6_test_long.json")
    rows = []
    for task in in_order(tuned["task"]):
        tu, un = tuned[tuned.task == task], untuned[untuned.task == task]
        metric = metric_of(tu)
        view = "cosine" if task in SIMILARITY_READOUT else "readout"
        probe = probes[(probes.task == task) & (probes.view == view)]
        n = one([*tu.n, *un.n, *probe.eval_rows], f"zoo {task}: test rows")
        t_mean, t_std, u_mean, u_std = (round(x * 100, 1) for x in (
            tu[metric].mean(), tu[metric].std(), un[metric].mean(), un[metric].std()))
        majority = None if metric == "pearson" else round(one(probe.majority, task) * 100, 1)
        p_score = round(one(probe[metric], task) * 100, 1)
        rows.append([label(task, metric), n, "similarity" if view == "cosine" else "descriptions",
                     num(majority, 1), num(p_score, 1), pm(u_mean, u_std, 1), pm(t_mean, t_std, 1),
                     learned(t_mean, t_std, u_mean, u_std, len(tu), majority, p_score)])
    return md_table(["task", "n", "readout", "majority", "probe", "untuned P0", "tuned", "learned?"], rows)


# ------------------------------------------------------------------------------------ SmolLM2 runs
@table("smollm2-cross-origin")
def smollm2_cross_origin(root: Path) -> str:
    summary = read_csv(root, "smollm2-135m/cross_origin_summary.csv").set_index(["task", "kind"])
    runs = read_csv(root, "smollm2-135m/cross_origin_runs.csv")
    rows = []
    for task in in_order(summary.index.get_level_values("task")):
        mine = runs[runs.task == task]
        cell = {kind: pm(*summary.loc[(task, kind), ["mean", "std"]]) for kind in ("untuned", "original", "mixed")}
        original = mine[mine.kind == "original"].sort_values("init_seed")
        rows.append([name(task), one(mine.n, f"{task}: test rows"), len(original), cell["untuned"],
                     cell["original"], cell["mixed"], " / ".join(num(s) for s in original.score)])
    return md_table(["task", "n", "origins", "ours untuned", "ours original", "ours mixed",
                     "original by origin (0 / 1 / 2)"], rows)


@table("smollm2-addition")
def smollm2_addition(root: Path) -> str:
    summary = read_csv(root, "smollm2-135m/addition_summary.csv")
    runs = read_csv(root, "smollm2-135m/addition_runs.csv")
    rows = []
    for (method, combo), part in summary.groupby(["method", "combo"], sort=False):
        tasks = combo.split("+")
        mine = runs[(runs.method == method) & (runs.combo == combo)]
        lambdas = mine[mine.task == tasks[0]].sort_values("seed")["lambda"]
        by_task = [part[part.task == t].iloc[0] for t in tasks]
        mean = lambda col: " / ".join(num(mine[mine.task == t][col].mean()) for t in tasks)  # noqa: E731
        rows.append([" + ".join(name(t) for t in tasks), method,
                     " / ".join(pm(r["mean"], r["std"], 1, 2) for r in by_task),
                     f"{one(part.lambda_mean, combo):.2f} ({', '.join(f'{x:g}' for x in lambdas)})",
                     " / ".join(num(r["untuned_mean"]) for r in by_task), mean("single"), mean("combined"),
                     " / ".join(pm(r["gain_share_mean"], r["gain_share_std"], 1, 2) for r in by_task)])
    return md_table(["pair", "method", "relative score (first / second)", "lambda: mean (per origin)",
                     "untuned accuracy", "single-task accuracy", "combined accuracy",
                     "surviving gain (first / second)"], rows)


# ------------------------------------------------------------------------------------ similarity
def same_task(root: Path, backbone: str, paper: bool) -> str:
    frame = read_csv(root, "similarity/similarity_by_task.csv")
    frame = frame[(frame.backbone == backbone) & (frame.task_a == frame.task_b)]
    rows = []
    rest = sorted(set(frame.task_a) - set(SOURCE_TASKS), key=lambda t: name(t).lower())
    for i, task in enumerate([t for t in SOURCE_TASKS if t in set(frame.task_a)] + rest):
        mine = frame[frame.task_a == task].set_index("definition")
        cells = [pm(mine.loc[d, "mean"], mine.loc[d, "std"], 1, 3) for d in ("flat", "token-mean")]
        first = [f"{PAPER['same_task_flat']} (all tasks)" if i == 0 else ""] if paper else []
        rows.append([name(task), one(mine.n, task), *first, *cells])
    return md_table(["task", "origin pairs", *(["paper T5 flat"] if paper else []), "ours flat",
                     "ours token-mean"], rows)


@table("similarity-minilm")
def similarity_minilm(root: Path) -> str:
    return same_task(root, "minilm-l6", paper=True)


@table("similarity-smollm2")
def similarity_smollm2(root: Path) -> str:
    return same_task(root, "smollm2-135m", paper=False)


SENTIMENT = {"sst2", "sst5", "yelp_polarity", "imdb", "sentences_yelp", "sentences_imdb", "sentences_amazon"}


@table("similarity-groups")
def similarity_groups(root: Path) -> str:
    frame = read_csv(root, "similarity/similarity_by_task.csv")
    frame = frame[frame.task_a < frame.task_b]
    within = lambda tasks: frame.task_a.isin(tasks) & frame.task_b.isin(tasks)  # noqa: E731
    minilm = frame.backbone == "minilm-l6"
    groups = [("MiniLM", "sentiment tasks", minilm & within(SENTIMENT)),
              ("MiniLM", "similarity-readout tasks", minilm & within(SIMILARITY_READOUT)),
              ("MiniLM", "every other pair", minilm & ~within(SENTIMENT) & ~within(SIMILARITY_READOUT)),
              ("MiniLM", "all", minilm), ("SmolLM2", "all", frame.backbone == "smollm2-135m")]
    rows = []
    for backbone, what, mask in groups:
        cells = []
        for definition in ("token-mean", "flat"):
            means = frame[mask & (frame.definition == definition)]["mean"]
            cells += [pm(means.mean(), means.std(), 1, 3), f"{num(means.min(), 1, 3)} to {num(means.max(), 1, 3)}"]
        rows.append([backbone, what, len(means), *cells])
    return md_table(["backbone", "pairs of different tasks", "pairs", "token-mean: mean +- std",
                     "token-mean: min to max", "flat: mean +- std", "flat: min to max"], rows)


@table("geometry")
def geometry(root: Path) -> str:
    frame = read_csv(root, "geometry/similarity_geometry.csv").set_index("definition")
    rows = [[d, int(frame.loc[d, "n_tasks"]), num(frame.loc[d, "spearman_r"], 1, 3),
             num(frame.loc[d, "p_value"], 1, 3)] for d in ("token-mean", "flat")]
    return md_table(["definition", "tasks", "Spearman r (MiniLM vs SmolLM2)", "p (Mantel, exact)"], rows)


@table("geometry-pairs")
def geometry_pairs(root: Path) -> str:
    frame = read_csv(root, "geometry/similarity_by_task.csv")
    frame = frame[frame.task_a < frame.task_b].set_index(["backbone", "definition", "task_a", "task_b"])
    columns = [(b, d) for d in ("token-mean", "flat") for b in ("minilm-l6", "smollm2-135m")]
    pairs = sorted({(a, b) for _, _, a, b in frame.index})
    rows = [[f"{name(a)} / {name(b)}", *(num(frame.loc[(bb, d, a, b), "mean"], 1, 3) for bb, d in columns)]
            for a, b in pairs]
    return md_table(["tasks", "MiniLM token-mean", "SmolLM2 token-mean", "MiniLM flat", "SmolLM2 flat"], rows)


# ------------------------------------------------------------------------------------ negation
@table("negation")
def negation(root: Path) -> str:
    summary = read_csv(root, "minilm-l6/negation_summary.csv")
    tasks = in_order(summary.negated)
    rows = []
    for neg in tasks:
        mine = summary[summary.negated == neg].set_index("task")
        own = mine.loc[neg]
        controls = ["-" if t == neg else num(mine.loc[t, "mean"], 1, 2) for t in tasks]
        rows.append([name(neg), f"{num(own.before_mean)} -> {num(own.after_mean)}",
                     pm(own["mean"], own["std"], 1, 2), ", ".join(controls)])
    return md_table(["negated", "own task: P0 -> P0 - tau (acc x100)", "own task after / before",
                     f"controls after / before ({', '.join(name(t) for t in tasks)})"], rows)


# ------------------------------------------------------------------------------------ probes
def probe_table(root: Path, *files: str) -> str:
    frame = read_results(root, *files)
    views = [v for v in ("readout", "pair", "cosine") if v in set(frame.view)]
    rows = []
    for task in in_order(frame.task):
        mine = frame[frame.task == task]
        metric = metric_of(mine)
        score = {v: one(mine[mine.view == v][metric], task) for v in set(mine.view)}
        majority = None if metric == "pearson" else one(mine.majority, task)
        rows.append([label(task, metric), one(mine.eval_rows, task), one(mine.train_rows, task),
                     num(majority), *(num(score.get(v)) for v in views)])
    return md_table(["task", "n", "train rows", "majority", *views], rows)


@table("probe-minilm")
def probe_minilm(root: Path) -> str:
    return probe_table(root, "probe/minilm-l6_test.json", "probe/minilm-l6_test_cosine.json",
                       "probe/minilm-l6_test_long.json")


@table("probe-smollm2")
def probe_smollm2(root: Path) -> str:
    return probe_table(root, "probe/smollm2-135m.json")


# ------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare every marked table with docs/results/")
    mode.add_argument("--write", action="store_true", help="rewrite every marked table from docs/results/")
    parser.add_argument("--report", type=Path, help=f"the report (default: {REPORT})")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root (default: the one this script is in)")
    args = parser.parse_args(argv)
    report = args.report or args.root / REPORT
    problems = check(args.root, report) if args.check else write(args.root, report)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{report}: {len(TABLES)} tables " + ("match docs/results/" if args.check else "written"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
