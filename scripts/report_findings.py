"""Tables of the report's findings sections (cross-origin on MiniLM, addition, few-shot) and of the readout
and length checks, generated from docs/results/ and registered with ``@table`` (see report_tables.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from report_lib import PAPER, md_table, name, num, one, pm, read_csv, read_results, table

MINILM = "minilm-l6"
FEWSHOT = f"{MINILM}/fewshot_paired"


def ci(mean: float, low: float, high: float, scale: float = 100, digits: int = 1) -> str:
    """``"64.3 [60.1, 68.5]"``: a mean with its 95 % interval."""
    return f"{num(mean, scale, digits)} [{num(low, scale, digits)}, {num(high, scale, digits)}]"


def p_value(p: float) -> str:
    return "-" if pd.isna(p) else f"{p:.3f}"


# ------------------------------------------------------------------------------------ cross-origin
@table("cross-origin-minilm")
def cross_origin_minilm(root: Path) -> str:
    """Every zoo task, the paper's six first: P0 untuned, P0(o) + tau(o), P0(o1) + tau(o2) over the 6 mixed pairs."""
    runs = read_csv(root, f"{MINILM}/cross_origin_runs.csv")
    tasks = [*PAPER["cross_origin"], *sorted(set(runs.task) - set(PAPER["cross_origin"]), key=name)]
    rows = []
    for task in tasks:
        mine = runs[runs.task == task]
        metric = one(mine.metric, f"{task}: metric")
        paper = PAPER["cross_origin"].get(task)
        rows.append([name(task) + (" (Pearson)" if metric == "pearson" else ""), one(mine.n, f"{task}: rows"),
                     "%s / %s" % paper if paper else "-", *cross_origin_cells(mine)])
    return md_table(["task", "n", "paper T5-base original / mixed", "ours untuned", "ours original", "ours mixed",
                     "mixed - original", "worst mixed pair"], rows)


def cross_origin_cells(mine: pd.DataFrame) -> list[str]:
    """One task's runs as cells: untuned, original and mixed (mean +- std), mixed - original, worst mixed pair."""
    by = {k: mine[mine.kind == k].score for k in ("untuned", "original", "mixed")}
    return [*(pm(v.mean(), v.std()) for v in by.values()), num(by["mixed"].mean() - by["original"].mean()),
            num(by["mixed"].min())]


# ------------------------------------------------------------------------------------ addition
ADDITION_FOLDERS = (MINILM, f"{MINILM}/nli", f"{MINILM}/sets3")


def read_csvs(root: Path, filename: str, folders) -> pd.DataFrame:
    """One results file of the same name from several experiment folders, concatenated."""
    return pd.concat([read_csv(root, f"{f}/{filename}") for f in folders], ignore_index=True)


@table("addition-pairs")
def addition_pairs(root: Path) -> str:
    s = read_csvs(root, "addition_summary.csv", ADDITION_FOLDERS[:2])
    rows = []
    for combo in dict.fromkeys(s.combo):
        tasks = combo.split("+")
        cell = {m: " / ".join(pm(*s[(s.combo == combo) & (s.method == m) & (s.task == t)].iloc[0][["mean", "std"]],
                                 scale=1, digits=2) for t in tasks) for m in ("sum", "ties", "dare")}
        paper = PAPER["addition"].get(tuple(tasks))
        lam = one(s[(s.combo == combo) & (s.method == "sum")].lambda_mean.round(4), combo)
        rows.append([" + ".join(name(t) for t in tasks), "%s / %s" % paper if paper else "-", cell["sum"],
                     cell["ties"], cell["dare"], f"{lam:.2f}"])
    return md_table(["pair", "paper T5-base", "ours, sum", "ours, TIES", "ours, DARE", "lambda (sum)"], rows)


@table("addition-sets3")
def addition_sets3(root: Path) -> str:
    s = read_csv(root, f"{MINILM}/sets3/addition_summary.csv")
    tasks = one(s.combo, "three-task set").split("+")
    rows = [[{"ties": "TIES", "dare": "DARE"}.get(m, m),
             *(pm(*part[part.task == t].iloc[0][["mean", "std"]], scale=1, digits=2) for t in tasks),
             f"{part.lambda_mean.iloc[0]:.2f}"] for m, part in s.groupby("method", sort=False)]
    return md_table(["method", *(name(t) for t in tasks), "lambda"], rows)


@table("addition-gain")
def addition_gain(root: Path) -> str:
    """Per task of each combination: the untuned floor, the single-task and combined scores (plain sum), the
    relative score, and the share of the learned gain that survives, for each merge method."""
    s = read_csvs(root, "addition_summary.csv", ADDITION_FOLDERS)
    floors = read_csvs(root, "addition_untuned.csv", ADDITION_FOLDERS)
    rows = []
    for combo in dict.fromkeys(s.combo):
        for task in combo.split("+"):
            by = {m: s[(s.combo == combo) & (s.task == task) & (s.method == m)].iloc[0] for m in ("sum", "ties", "dare")}
            sm = by["sum"]
            rows.append([" + ".join(name(t) for t in combo.split("+")), name(task),
                         one(floors[floors.task == task].n, f"{task}: rows"), num(sm.untuned_mean), num(sm.single_mean),
                         num(sm.combined_mean), num(sm["mean"], 1, 2),
                         *(pm(r.gain_share_mean, r.gain_share_std, 1, 2) for r in by.values())])
    return md_table(["combination", "task", "n", "untuned P0", "single", "combined (sum)", "relative (sum)",
                     "surviving gain, sum", "surviving gain, TIES", "surviving gain, DARE"], rows)


# ------------------------------------------------------------------------------------ few-shot
@table("fewshot")
def fewshot(root: Path) -> str:
    runs = read_csv(root, f"{FEWSHOT}/fewshot_runs.csv")
    s = read_csv(root, f"{FEWSHOT}/fewshot_summary.csv")
    rows = []
    for target in dict.fromkeys(runs.target):
        sources = one(runs[runs.target == target].sources, target).split("+")
        inits = ["random", *(f"spot:{x}" for x in sources), "multitask", "tpv"]
        for k in sorted(s[s.target == target].k.unique()):
            part = s[(s.target == target) & (s.k == k)].set_index("init")
            paper = PAPER["fewshot"].get((target, int(k)))
            rows.append([f"{name(target)} ({' + '.join(name(x) for x in sources)})", int(k),
                         "%s / %s / %s" % paper if paper else "-",
                         " / ".join(str(int(part.loc[i, "n"])) if i in part.index else "0" for i in inits),
                         *(ci(*part.loc[i, ["mean", "ci_low", "ci_high"]]) if i in part.index else "-" for i in inits)])
    return md_table(["target (sources)", "k", "paper random / best single / TPV", "runs per init",
                     "random", "SPoT source 1", "SPoT source 2", "multi-task", "TPV"], rows)


@table("fewshot-tests")
def fewshot_tests(root: Path) -> str:
    t = read_csv(root, f"{FEWSHOT}/fewshot_tests.csv")
    rows = [[name(r.target), int(r.k), f"TPV - {r.b_init if r.b == 'best_spot' else r.b}", int(r.n),
             ci(r.mean_diff, r.ci_low, r.ci_high), f"{r.a_wins} / {r.b_wins} / {r.ties}", p_value(r.p_wilcoxon),
             p_value(r.p_ttest)] for r in t.itertuples()]
    return md_table(["target", "k", "comparison", "pairs", "mean difference [95 % CI]", "TPV wins / losses / ties",
                     "p, Wilcoxon", "p, paired t"], rows)


# ------------------------------------------------------------------------------------ checks
@table("cb-readout")
def cb_readout(root: Path) -> str:
    probes = read_results(root, "readout/cb_probe_validation.json")
    rows = [[f"linear probe, {'pooled input (what the descriptions read)' if r.view == 'readout' else 'cosine of the two fields'}",
             r.eval_rows, num(r.majority), num(r.accuracy), num(r.macro_f1)] for r in probes.itertuples()]
    for readout, rel in (("descriptions", "cb_descriptions_validation.json"),
                         ("similarity", "cb_similarity_validation.json")):
        e = read_results(root, f"readout/{rel}")
        rows.append([f"tuned prompts, {readout} readout ({len(e)} origins)", one(e.n, rel), "-",
                     pm(e.accuracy.mean(), e.accuracy.std()), pm(e.macro_f1.mean(), e.macro_f1.std())])
    return md_table(["CB, validation rows", "n", "majority", "accuracy", "macro-F1"], rows)


@table("length-imdb")
def length_imdb(root: Path) -> str:
    rows, runs = [], read_csv(root, f"{MINILM}/length/length_runs.csv")
    for target in ("imdb", "sentences_imdb"):
        s = read_csv(root, f"{MINILM}/length/length_{target}_summary.csv")
        positive = one([c for c in s.columns if c.startswith("pred_pos") and s[c].notna().all()], f"{target}: positive")
        for r in s.itertuples():
            mine = runs[(runs.target == target) & (runs.init == r.init) & (runs.max_length == r.max_length)]
            rows.append([name(target), r.init, r.max_length, num(r.mean_tokens_mean, 1, 0), one(mine.n, target),
                         pm(r.mean, r.std), num(mine.m_accuracy.mean()), num(getattr(r, positive))])
    return md_table(["target", "init", "max tokens", "mean tokens kept", "n", "F1", "accuracy",
                     "% predicted positive"], rows)


def zoo_listing(root: Path) -> pd.DataFrame:
    """The zoo's prompts as `tpv store list --norms --json` listed them, by backbone and task name."""
    df = read_results(root, "norms/zoo_norms.json", key="prompts")
    return df.assign(label=df.task.map(name)).sort_values(["backbone", "length", "label"])


@table("norms")
def norms(root: Path) -> str:
    """||P0||, ||tau|| and their ratio per task and prompt length, mean over the stored origins (tpv store list
    --norms)."""
    df = zoo_listing(root)
    rows = []
    for (backbone, length, task), part in df.groupby(["backbone", "length", "task"], sort=False):
        rows.append([backbone, name(task), int(length), len(part), num(part.p0_norm.mean(), 1, 2),
                     num(part.tau_norm.mean(), 1, 2), pm(part.tau_over_p0.mean(), part.tau_over_p0.std(), 1, 2)])
    return md_table(["backbone", "task", "L", "origins", "norm of P0", "norm of tau", "norm of tau / norm of P0"], rows)


@table("zoo-wall-time")
def zoo_wall_time(root: Path) -> str:
    """Minutes each stored prompt took to train (``wall_time_s`` of its metadata), per backbone, prompt length
    (L = 100: the paper's recipe, section 9) and task."""
    df = zoo_listing(root)
    df = df.assign(minutes=df.wall_time_s / 60)
    span = lambda part: [len(part), f"{part.minutes.min():.1f}-{part.minutes.max():.1f}",  # noqa: E731
                         f"{part.minutes.sum():.1f}"]
    keys = ["backbone", "length"]
    rows = [[backbone, int(length), name(task), *span(part)]
            for (backbone, length, task), part in df.groupby([*keys, "task"], sort=False)]
    rows += [[backbone, int(length), "all", *span(part)] for (backbone, length), part in df.groupby(keys)]
    return md_table(["backbone", "L", "task", "prompts", "minutes per prompt", "minutes in all"], rows)
