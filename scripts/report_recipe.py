"""Tables of the report's recipe comparison (section 9): MiniLM's source tasks tuned at the demo recipe
(L = 20, the zoo's prompts) beside the same tasks retrained at the paper's recipe (L = 100, `--recipe
paper`), from the same origin seeds; every experiment rerun on the L = 100 prompts into its own folder.
Registered with ``@table`` (see report_tables.py). Only the tasks that have L = 100 prompts appear."""
from __future__ import annotations

from pathlib import Path

from report_findings import FEWSHOT, MINILM, ci, cross_origin_cells, p_value, zoo_listing
from report_lib import md_table, name, num, one, pm, read_csv, table

RECIPE = f"{MINILM}/recipe_paper"            # cross-origin and addition on the L = 100 prompts
RECIPE_FEWSHOT = f"{RECIPE}/fewshot_paired"  # few-shot from the L = 100 origins and prompts
SIMILARITY = {20: "similarity/similarity_by_task.csv", 100: "similarity_paper/similarity_by_task.csv"}
LENGTHS = (20, 100)
RECIPES = {20: "demo, L = 20", 100: "paper, L = 100"}
ORDER = ("sst2", "yelp_polarity", "dbpedia_14", "trec", "mnli", "qnli")


def retrained(root: Path) -> list[str]:
    """The source tasks with L = 100 MiniLM prompts in the zoo listing, in the report's order."""
    df = zoo_listing(root)
    done = set(df[(df.backbone == MINILM) & (df.length == 100)].task)
    return [t for t in ORDER if t in done] + sorted(done - set(ORDER))


def ordered(tasks) -> list[str]:
    tasks = set(tasks)
    return [t for t in ORDER if t in tasks] + sorted(tasks - set(ORDER))


@table("recipe-prompts")
def recipe_prompts(root: Path) -> str:
    """Per task and recipe: the prompts, steps run, the step of the kept prompt, early stops, minutes per
    prompt and ||tau|| / ||P0|| (mean +- std over origins), from `tpv store list --norms --json`."""
    df = zoo_listing(root)
    df = df[df.backbone == MINILM]
    rows = []
    for task in retrained(root):
        for length in LENGTHS:
            part = df[(df.task == task) & (df.length == length)]
            early = part.stopped_early.eq(True)  # None: a prompt from before the field (no patience then)
            rows.append([name(task), RECIPES[length], len(part), f"{int(part.steps.min())}-{int(part.steps.max())}",
                         ", ".join(str(int(s)) for s in part.best_step) if part.best_step.notna().all() else "-",
                         f"{int(early.sum())} of {len(part)}", f"{(part.wall_time_s / 60).mean():.1f}",
                         pm(part.tau_over_p0.mean(), part.tau_over_p0.std(), 1, 2)])
    return md_table(["task", "recipe", "prompts", "steps run", "step kept (per origin)", "stopped early",
                     "minutes per prompt", "norm of tau / norm of P0"], rows)


@table("recipe-cross-origin")
def recipe_cross_origin(root: Path) -> str:
    """Cross-origin transfer of each retrained task at both recipes (whole test splits)."""
    runs = {20: read_csv(root, f"{MINILM}/cross_origin_runs.csv"), 100: read_csv(root, f"{RECIPE}/cross_origin_runs.csv")}
    rows = []
    for task in ordered(runs[100].task):
        for length in LENGTHS:
            mine = runs[length][runs[length].task == task]
            rows.append([name(task), RECIPES[length], one(mine.n, f"{task}: rows"), *cross_origin_cells(mine)])
    return md_table(["task", "recipe", "n", "untuned P0", "original", "mixed", "mixed - original",
                     "worst mixed pair"], rows)


@table("recipe-addition")
def recipe_addition(root: Path) -> str:
    """Plain addition (sum) of each retrained pair at both recipes: floor, single, combined, relative score,
    surviving share of the learned gain, and the lambda chosen on validation."""
    summaries = {20: read_csv(root, f"{MINILM}/addition_summary.csv"),
                 100: read_csv(root, f"{RECIPE}/addition_summary.csv")}
    rows = []
    for combo in dict.fromkeys(summaries[100].combo):
        for task in combo.split("+"):
            for length in LENGTHS:
                s = summaries[length]
                r = s[(s.combo == combo) & (s.task == task) & (s.method == "sum")].iloc[0]
                rows.append([" + ".join(name(t) for t in combo.split("+")), name(task), RECIPES[length],
                             num(r.untuned_mean), num(r.single_mean), num(r.combined_mean), pm(r["mean"], r["std"], 1, 2),
                             pm(r.gain_share_mean, r.gain_share_std, 1, 2), f"{r.lambda_mean:.2f}"])
    return md_table(["combination", "task", "recipe", "untuned P0", "single", "combined (sum)", "relative",
                     "surviving gain", "lambda"], rows)


@table("recipe-similarity")
def recipe_similarity(root: Path) -> str:
    """Cosine of task prompt vectors between the retrained tasks (same task: different origins only), flat and
    token-mean, at both recipes (mean +- std over origin pairs)."""
    frames = {}
    for length, rel in SIMILARITY.items():
        f = read_csv(root, rel)
        frames[length] = f[f.backbone == MINILM].set_index(["definition", "task_a", "task_b"])
    tasks = ordered(frames[100].index.get_level_values("task_a"))
    rows = []
    for i, a in enumerate(tasks):
        for b in tasks[i:]:
            key = (a, b) if (a, b) in frames[100].loc["flat"].index else (b, a)
            cells = [pm(*frames[length].loc[(d, *key), ["mean", "std"]], 1, 3)
                     for d in ("flat", "token-mean") for length in LENGTHS]
            rows.append([name(a) if a == b else f"{name(a)} / {name(b)}",
                         one([frames[length].loc[("flat", *key), "n"] for length in LENGTHS], f"{a}/{b}: pairs"), *cells])
    return md_table(["task(s)", "origin pairs", "flat, L = 20", "flat, L = 100", "token-mean, L = 20",
                     "token-mean, L = 100"], rows)


@table("recipe-fewshot")
def recipe_fewshot(root: Path) -> str:
    """Few-shot from the L = 100 origins and prompts beside the L = 20 cells of section 3 (same targets, k,
    data seeds and budget): mean F1 [95 % CI] per init."""
    s = {20: read_csv(root, f"{FEWSHOT}/fewshot_summary.csv"), 100: read_csv(root, f"{RECIPE_FEWSHOT}/fewshot_summary.csv")}
    rows = []
    for (target, k), part in s[100].groupby(["target", "k"], sort=True):
        for init in part.init:
            cells = []
            for length in LENGTHS:
                r = s[length][(s[length].target == target) & (s[length].k == k) & (s[length].init == init)]
                cells += [str(int(r.n.iloc[0])), ci(*r.iloc[0][["mean", "ci_low", "ci_high"]])] if len(r) else ["0", "-"]
            rows.append([name(target), int(k), init, *cells])
    return md_table(["target", "k", "init", "runs, L = 20", "L = 20", "runs, L = 100", "L = 100"], rows)


@table("recipe-fewshot-tests")
def recipe_fewshot_tests(root: Path) -> str:
    """TPV minus random and minus the better SPoT source per (target, k), at both recipes (section 3's tests)."""
    t = {20: read_csv(root, f"{FEWSHOT}/fewshot_tests.csv"), 100: read_csv(root, f"{RECIPE_FEWSHOT}/fewshot_tests.csv")}
    def cells(x) -> list[str]:
        return ["-", "-"] if x is None else [
            f"{ci(x.mean_diff, x.ci_low, x.ci_high)} ({x.a_wins} / {x.b_wins} / {x.ties})", p_value(x.p_wilcoxon)]

    rows = []
    for r in t[100].itertuples():
        old = t[20][(t[20].target == r.target) & (t[20].k == r.k) & (t[20].b == r.b)]
        comparison = f"TPV - {r.b_init if r.b == 'best_spot' else r.b}"
        rows.append([name(r.target), int(r.k), comparison, int(r.n), *cells(next(old.itertuples(), None)), *cells(r)])
    return md_table(["target", "k", "comparison", "pairs", "L = 20: difference [95 % CI] (wins / losses / ties)",
                     "L = 20: p, Wilcoxon", "L = 100: difference [95 % CI] (wins / losses / ties)",
                     "L = 100: p, Wilcoxon"], rows)
