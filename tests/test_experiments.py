import pandas as pd
import pytest

from tpv_core.experiments.addition import addition_figure, run_addition
from tpv_core.experiments.common import mean_ci, summarize
from tpv_core.experiments.cross_origin import run_cross_origin
from tpv_core.experiments.fewshot import run_fewshot
from tpv_core.experiments.negation import run_negation
from tpv_core.training import TrainConfig

TASKS = ["sentences_yelp", "sentences_imdb"]


def test_mean_ci():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["n"] == 3 and r["ci_low"] < 2.0 < r["ci_high"]
    assert mean_ci([5.0])["ci_low"] == 5.0


def test_summarize_also_means_other_columns():
    df = pd.DataFrame({"g": ["a", "a", "b"], "v": [1.0, 3.0, 5.0], "w": [10.0, 20.0, 7.0]})
    out = summarize(df, ["g"], "v", also_mean=["w"])
    assert list(out["g"]) == ["a", "b"] and list(out["mean"]) == [2.0, 5.0] and list(out["w_mean"]) == [15.0, 7.0]
    assert "w_mean" in summarize(df.iloc[:0], ["g"], "v", also_mean=["w"]).columns


def test_cross_origin_end_to_end(minilm, tiny_store, tmp_path):
    res = run_cross_origin(minilm, tiny_store, TASKS, tmp_path, limit=16)
    assert len(res.runs) == 2 * 2 * 3  # tasks x origins x (untuned + one per vector origin)
    assert set(res.summary["kind"]) == {"untuned", "original", "mixed"}
    assert (tmp_path / "cross_origin_runs.csv").exists() and (tmp_path / "cross_origin_summary.csv").exists()
    assert (tmp_path / "cross_origin.html").exists()
    again = run_cross_origin(minilm, tiny_store, TASKS, tmp_path, limit=16)  # resumes: nothing new to run
    pd.testing.assert_frame_equal(again.runs, res.runs)


def test_addition_end_to_end(minilm, tiny_store, tmp_path):
    res = run_addition(minilm, tiny_store, TASKS, tmp_path, grid=[0.0, 0.5, 1.0], val_limit=16, limit=16)
    assert len(res.runs) == 2 * 2  # one pair x 2 origins x 2 tasks
    assert set(res.runs["lambda"]) <= {0.0, 0.5, 1.0}
    assert (res.runs["relative"] - res.runs["combined"] / res.runs["single"]).abs().max() < 1e-9
    assert (tmp_path / "addition_summary.csv").exists()
    assert set(res.runs["method"]) == {"sum"}
    # the untuned floor on the same rows, and the share of the learned gain that survives
    floor = pd.read_csv(tmp_path / "addition_untuned.csv")
    assert len(floor) == 2 * 2 and set(floor["n"]) == {16}
    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.tasks import get_task

    p = tiny_store.load_all(backbone=minilm.name, task=TASKS[0])[0]
    own = evaluate(minilm, get_task(TASKS[0]), p.origin.require_tensor(),
                   prepare_split(minilm, get_task(TASKS[0]), "test", limit=16)).main
    assert floor[(floor["task"] == TASKS[0]) & (floor["seed"] == p.origin.seed)]["untuned"].iloc[0] == own
    r = res.runs
    want = ((r["combined"] - r["untuned"]) / (r["single"] - r["untuned"])).where(r["single"] > r["untuned"])
    pd.testing.assert_series_equal(r["gain_share"], want, check_names=False)
    assert {"gain_share_mean", "gain_share_std", "untuned_mean"} <= set(res.summary.columns)
    # an older log without the floor: a rerun adds only the floor, the runs stay as they were
    (tmp_path / "addition_untuned.csv").unlink()
    again = run_addition(minilm, tiny_store, TASKS, tmp_path, grid=[0.0, 0.5, 1.0], val_limit=16, limit=16)
    pd.testing.assert_frame_equal(again.runs, res.runs)


def test_addition_compares_merge_methods(minilm, tiny_store, tmp_path):
    res = run_addition(minilm, tiny_store, TASKS, tmp_path, methods=["sum", "ties"], grid=[0.5, 1.0],
                       val_limit=8, limit=8)
    assert len(res.runs) == 2 * 2 * 2  # methods x origins x tasks
    assert set(res.summary["method"]) == {"sum", "ties"}
    # the single-task reference is the same prompt whatever the merge method
    ref = res.runs.pivot_table(index=["seed", "task"], columns="method", values="single")
    assert (ref["sum"] == ref["ties"]).all()
    with pytest.raises(ValueError, match="unknown merge method"):
        run_addition(minilm, tiny_store, TASKS, tmp_path / "bad", methods=["average"], limit=8)


def test_addition_figure_one_slot_per_task_of_each_combination():
    summary = pd.DataFrame({"method": ["sum", "sum", "ties", "ties", "sum", "sum"],
                            "combo": ["a+b", "a+b", "a+b", "a+b", "c+a", "c+a"],
                            "task": ["a", "b", "a", "b", "c", "a"], "mean": [0.9, 0.8, 0.95, 0.7, 0.6, 0.5],
                            "std": [0.01] * 6})
    fig = addition_figure(summary, "t")
    by = {(tr.name, tr.offsetgroup): tr for tr in fig.data}
    # a is first in a+b and second in c+a: two traces, one legend entry
    assert set(by) == {("a", "0"), ("b", "1"), ("c", "0"), ("a", "1")}
    assert [tr.showlegend for tr in fig.data].count(True) == 3
    assert list(by[("a", "0")].x[0]) == ["a+b", "a+b"] and list(by[("a", "0")].x[1]) == ["sum", "ties"]
    assert list(by[("a", "0")].y) == [0.9, 0.95] and list(by[("a", "1")].y) == [0.5]
    assert by[("a", "0")].marker.color == by[("a", "1")].marker.color != by[("b", "1")].marker.color
    assert addition_figure(summary.iloc[:0], "none").data == ()


def test_negation_end_to_end(minilm, tiny_store, tmp_path):
    res = run_negation(minilm, tiny_store, TASKS, tmp_path, limit=16)
    runs = res.runs
    assert len(runs) == 2 * 2 * 2  # negated task x origins x scored task
    target = runs[runs["role"] == "target"]
    assert (target["negated"] == target["task"]).all() and len(target) == 4
    control = runs[runs["role"] == "control"]
    assert (control["before"] == control["tuned"]).all()
    assert (runs["relative"] - runs["after"] / runs["before"]).abs().max() < 1e-9
    assert (tmp_path / "negation_summary.csv").exists()
    again = run_negation(minilm, tiny_store, TASKS, tmp_path, limit=16)  # resumes: nothing new
    pd.testing.assert_frame_equal(again.runs, runs)
    with pytest.raises(ValueError, match="coefficient"):
        run_negation(minilm, tiny_store, TASKS, tmp_path, coef=0)


def test_fewshot_end_to_end(minilm, tiny_store, tmp_path):
    import shutil

    from tpv_core.store import PromptStore

    # a private copy: the multi-task prompt this run tunes must not land in the session's shared store
    store = PromptStore(shutil.copytree(tiny_store.root, tmp_path / "store"))
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, eval_limit=8)
    res = run_fewshot(minilm, store, "sentences_amazon", TASKS, tmp_path, ks=[0, 4], config=cfg, limit=16)
    inits = set(res.runs["init"])
    assert inits == {"random", "spot:sentences_yelp", "spot:sentences_imdb", "multitask", "tpv"}
    assert len(res.runs) == len(inits) * 2 * 2  # inits x k x origins
    assert set(res.summary.columns) >= {"target", "k", "init", "mean", "std", "n", "ci_low", "ci_high"}
    assert (res.runs.loc[res.runs["k"] == 0, "steps"] == 0).all()
    assert store.exists(minilm.name, "sentences_yelp+sentences_imdb", "vocab5000-s0-L4")
    assert not tiny_store.exists(minilm.name, "sentences_yelp+sentences_imdb", "vocab5000-s0-L4")
    assert (tmp_path / "fewshot_runs.csv").exists() and (tmp_path / "fewshot_summary.csv").exists()


def test_fewshot_cells_cross_origins_and_data_seeds(minilm, tiny_store, tmp_path):
    """Every (origin, data seed) is one cell shared by all inits: the k rows and batch order come from the data
    seed, so two origins with one data seed train on the same rows, and one origin with two data seeds on
    different ones; k = 0 runs once per origin; an older log (no data_seed column) resumes."""
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, eval_limit=8)
    res = run_fewshot(minilm, tiny_store, "sentences_amazon", TASKS, tmp_path, ks=[0, 4], data_seeds=[0, 1],
                      inits=["random", "tpv"], config=cfg, limit=16)
    runs = res.runs
    assert len(runs) == 2 * 2 * (1 + 2)  # origins x inits x (k=0 once + k=4 per data seed)
    assert sorted(runs.loc[runs["k"] == 4, "data_seed"].unique()) == [0, 1]
    assert (runs.loc[runs["k"] == 0, "data_seed"] == 0).all() and (runs["wall_s"] >= 0).all()
    tests = pd.read_csv(tmp_path / "fewshot_tests.csv")
    row = tests[(tests["k"] == 4) & (tests["b"] == "random")].iloc[0]
    assert row["n"] == 4 and row["a_wins"] + row["b_wins"] + row["ties"] == 4
    # the k rows: the data seed decides them, not the origin
    from tpv_core.tasks import get_task, k_shot, load_split

    task = get_task("sentences_amazon")
    rows = load_split(task, "train")
    assert k_shot(rows, 4, 0, task) != k_shot(rows, 4, 1, task)
    # an older log keyed without data seeds: its rows count under data seed = origin seed, nothing reruns
    old = runs[(runs["data_seed"] == runs["seed"]) | (runs["k"] == 0)].drop(columns=["data_seed"])
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old.to_csv(old_dir / "fewshot_runs.csv", index=False)
    again = run_fewshot(minilm, tiny_store, "sentences_amazon", TASKS, old_dir, ks=[0, 4], inits=["random", "tpv"],
                        config=cfg, limit=16)
    assert len(again.runs) == len(old)
    with pytest.raises(ValueError, match="data seeds"):
        run_fewshot(minilm, tiny_store, "sentences_amazon", TASKS, tmp_path, ks=[4], data_seeds=[-1], config=cfg)


def test_length_scores_each_init_at_each_cut(minilm, tiny_store, tmp_path):
    from tpv_core.evaluation import evaluate, prepare_split
    from tpv_core.experiments.length import run_length
    from tpv_core.tasks import get_task

    res = run_length(minilm, tiny_store, "sentences_amazon", TASKS, tmp_path, max_lengths=[3, 512], limit=8)
    runs = res.runs
    assert len(runs) == 2 * 4 * 2  # origins x (random, 2 spot, tpv) x cuts
    assert (runs.loc[runs["max_length"] == 3, "mean_tokens"] <= 3).all()
    shares = runs[[c for c in runs.columns if c.startswith("pred_")]].sum(axis=1)
    assert ((shares - 1).abs() < 1e-9).all()
    # the full-length row is the plain evaluation of the source prompt
    task = get_task("sentences_amazon")
    p = tiny_store.load_all(backbone=minilm.name, task=TASKS[0])[0]
    full = evaluate(minilm, task, p.tensor, prepare_split(minilm, task, "test", limit=8)).metrics
    row = runs[(runs["init"] == f"spot:{TASKS[0]}") & (runs["seed"] == p.origin.seed) & (runs["max_length"] == 512)]
    assert row["score"].iloc[0] == full[row["metric"].iloc[0]]
    assert (tmp_path / "length_sentences_amazon_summary.csv").exists()
    with pytest.raises(ValueError, match="max lengths"):
        run_length(minilm, tiny_store, "sentences_amazon", TASKS, tmp_path, max_lengths=[0])


def test_paired_tests_compare_within_cells():
    from tpv_core.experiments.paired import paired_tests, ttest_p, wilcoxon_p

    cells = [(o, d) for o in range(3) for d in range(2)]
    rows = []
    for i, (o, d) in enumerate(cells):
        base = 0.5 + 0.05 * i  # cells differ a lot; within a cell tpv is always 0.02 above random
        rows += [{"target": "t", "k": 10, "seed": o, "data_seed": d, "init": "random", "score": base},
                 {"target": "t", "k": 10, "seed": o, "data_seed": d, "init": "tpv", "score": base + 0.02},
                 {"target": "t", "k": 10, "seed": o, "data_seed": d, "init": "spot:a", "score": base + 0.03},
                 {"target": "t", "k": 10, "seed": o, "data_seed": d, "init": "spot:b", "score": base - 0.1 + 0.01 * i}]
    out = paired_tests(pd.DataFrame(rows)).set_index("b")
    r = out.loc["random"]
    assert r["n"] == 6 and r["a_wins"] == 6 and abs(r["mean_diff"] - 0.02) < 1e-9
    assert r["p_wilcoxon"] == pytest.approx(0.03125)  # the smallest two-sided exact p for n = 6
    assert out.loc["best_spot", "b_init"] == "spot:a" and out.loc["best_spot", "b_wins"] == 6
    assert "multitask" not in out.index  # not run: no row
    assert wilcoxon_p([0.0, 0.0]) != wilcoxon_p([0.0, 0.0])  # nan: no evidence either way
    assert ttest_p([0.1]) != ttest_p([0.1])


def test_cli_negation_and_addition_methods(tiny_store, tmp_path, capsys):
    from tpv_core.cli import main

    common = ["--backbone", "minilm-l6", "--store", str(tiny_store.root), "--limit", "8", "--tasks", *TASKS]
    assert main(["experiment", "negation", *common, "--out", str(tmp_path / "neg"), "--coef", "0.5"]) == 0
    runs = pd.read_csv(tmp_path / "neg" / "negation_runs.csv")
    assert set(runs["coef"]) == {0.5} and set(runs["role"]) == {"target", "control"}
    assert main(["experiment", "addition", *common, "--out", str(tmp_path / "add"), "--methods", "dare",
                 "--grid", "1.0", "--val-limit", "8"]) == 0
    assert set(pd.read_csv(tmp_path / "add" / "addition_runs.csv")["method"]) == {"dare"}
    assert "wrote" in capsys.readouterr().out


def test_a_store_with_two_prompt_lengths_is_read_one_length_at_a_time(minilm, tiny_store, tmp_path, capsys):
    """The demo prompts beside paper-recipe ones (another L from the same seeds): every experiment reads one
    length, the family default or --length, and never adds a vector to an origin of another length."""
    import shutil

    from tpv_core.cli import main
    from tpv_core.experiments.common import choose_length, task_prompts
    from tpv_core.prompts import make_origin
    from tpv_core.store import PromptStore
    from tpv_core.tasks import get_task
    from tpv_core.training import tune_prompt

    store = PromptStore(shutil.copytree(tiny_store.root, tmp_path / "store"))
    for name in TASKS:
        for seed in (0, 1):
            store.save(tune_prompt(minilm, get_task(name), make_origin(minilm, seed=seed, length=6),
                                   TrainConfig(steps=1, batch_size=4, eval_every=None)).prompt)
    specs = [get_task(t) for t in TASKS]
    with pytest.warns(UserWarning, match="lengths L = 4, 6; reading the L = 4 ones"):
        assert choose_length(store, minilm, specs) == 4  # the family default (20) is not stored: the shortest
    assert choose_length(store, minilm, specs, 6) == 6
    assert choose_length(store, minilm, specs[:1], seeds=[5]) is None
    with pytest.raises(FileNotFoundError, match=r"L = 9"):
        task_prompts(store, minilm, specs, None, "addition for", length=9)

    res = run_cross_origin(minilm, store, TASKS, tmp_path / "xo", limit=8, length=6)
    assert len(res.runs) == 2 * 2 * 3
    assert res.runs["init_origin"].str.endswith("-L6").all() and res.runs["vector_origin"].isin(
        ["none", "vocab5000-s0-L6", "vocab5000-s1-L6"]).all()

    cfg = TrainConfig(steps=1, batch_size=4, eval_every=None)
    with pytest.warns(UserWarning, match="reading the L = 4 ones"):
        run_fewshot(minilm, store, "sentences_amazon", TASKS, tmp_path / "fs", ks=[0], inits=["random"], config=cfg,
                    limit=8)
    with pytest.raises(ValueError, match="another --out"):  # the log is keyed by seed: L = 6 runs would pass for these
        run_fewshot(minilm, store, "sentences_amazon", TASKS, tmp_path / "fs", ks=[0], inits=["random"], config=cfg,
                    limit=8, length=6)

    common = ["combine", "--backbone", "minilm-l6", "--store", str(store.root), "--vector", *TASKS, "--limit", "8"]
    assert main([*common, "--length", "6", "--json"]) == 0
    assert "vocab5000-s0-L6" in capsys.readouterr().out
    assert main(common) == 0
    assert "note: the stored prompts of sentences_yelp, sentences_imdb on minilm-l6 come in lengths L = 4, 6" in \
        capsys.readouterr().err
    assert main([*common, "--length", "9"]) == 2
    assert "with L = 9" in capsys.readouterr().err

    sim = ["similarity", str(store.root), "--definition", "token-mean", "--format", "csv"]
    assert main([*sim, "--out", str(tmp_path / "sim4")]) == 0
    assert "note: the prompts of minilm-l6 come in lengths L = 4, 6; reading the L = 4 ones" in capsys.readouterr().err
    pairs = pd.read_csv(tmp_path / "sim4" / "similarity_pairs.csv")
    assert len(pairs) == 6 and pairs["origin_a"].str.endswith("-L4").all() and pairs["origin_b"].str.endswith("-L4").all()
    assert main([*sim, "--length", "6", "--out", str(tmp_path / "sim6")]) == 0
    assert pd.read_csv(tmp_path / "sim6" / "similarity_pairs.csv")["origin_a"].str.endswith("-L6").all()
    assert main([*sim, "--length", "9"]) == 2
    err = capsys.readouterr().err
    assert "no prompts of length L = 9" in err and "stored: L = 4, 6" in err
    assert main(["project", str(store.root), "--method", "pca", "--format", "csv", "--out", str(tmp_path / "proj")]) == 0
    assert "reading the L = 4 ones" in capsys.readouterr().err
    origins = pd.read_csv(tmp_path / "proj" / "projection.csv")["origin"]
    assert len(origins) >= 2 and origins.str.endswith("-L4").all()  # (the L = 6 ones are 1-step zero vectors)
