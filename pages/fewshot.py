"""Few-shot: run the few-shot initialisation experiment (small budgets, in the job queue) or load its
results, and plot the score against k for each initialisation with confidence intervals."""

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pages._state import keep
from tpv_core import plots
from tpv_core.app.jobs import FAILED, QUEUED, RUNNING

ui.page_setup("Few-shot initialisation")
st.caption("A target task tuned on k examples from different initialisations with one budget: random P0, a source "
           "task's prompt (SPoT), a multi-task prompt, or P0 + the sum of the sources' task prompt vectors (TPV).")
root = ui.store_root()
queue = ui.job_queue()
RUNS, SUMMARY = "fewshot_runs.csv", "fewshot_summary.csv"
SUMMARY_COLS = ["target", "k", "init", "mean", "std", "n", "ci_low", "ci_high"]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    from tpv_core.experiments.common import summarize as _summarize

    return _summarize(runs, ["target", "k", "init"], "score")


def read_results(folder: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    runs = pd.read_csv(folder / RUNS) if (folder / RUNS).is_file() else None
    summary = pd.read_csv(folder / SUMMARY) if (folder / SUMMARY).is_file() else None
    if summary is None and runs is not None:
        summary = summarize(runs)
    return summary, runs


def read_upload(files) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    summary = runs = None
    for f in files:
        df = pd.read_csv(io.BytesIO(f.getvalue()))
        if {"seed", "score"} <= set(df.columns):
            runs = df
        elif set(SUMMARY_COLS) <= set(df.columns):
            summary = df
        else:
            st.warning(f"{f.name}: neither a few-shot summary ({', '.join(SUMMARY_COLS)}) nor a runs table "
                       "(target, k, init, seed, score)")
    if summary is None and runs is not None:
        summary = summarize(runs)
    return summary, runs


tab_results, tab_run = st.tabs(["Results", "Run"])

# ---------------------------------------------------------------------------------------- results
SHIPPED = ui.APP_DIR / "docs" / "results"
BUNDLED = {f"bundled: {d.relative_to(SHIPPED).as_posix()}": d
           for d in sorted({p.parent for name in (RUNS, SUMMARY) for p in SHIPPED.rglob(name)})}


def metric_of(target: str, runs: pd.DataFrame | None) -> str:
    """The metric the scores are in: the runs table's ``metric`` column, else the task's headline metric."""
    if runs is not None and "metric" in runs.columns:
        got = runs.loc[runs["target"] == target, "metric"].dropna().unique()
        if len(got) == 1:
            return str(got[0])
    try:
        from tpv_core.tasks import get_task

        return get_task(target, root).metrics[0]
    except Exception:  # noqa: BLE001 - an unknown custom task: say "score"
        return "score"


with tab_results:
    if "fs_dir_next" in st.session_state:  # a finished run points the results view at its folder
        st.session_state["_kept"]["fs_dir"] = st.session_state.pop("fs_dir_next")
        st.session_state["_kept"]["fs_source"] = "results folder"
    own = Path(st.session_state["results_dir"]) / "fewshot"
    has_own = (own / RUNS).is_file() or (own / SUMMARY).is_file()
    sources = [*BUNDLED, "results folder", "upload"]
    default_source = "results folder" if has_own or not BUNDLED else next(iter(BUNDLED))
    source = st.radio("Results", sources, horizontal=True, key=keep("fs_source", default_source, options=sources),
                      help="bundled: the few-shot results shipped in docs/results (shown at once); results folder: "
                           "what `tpv experiment fewshot --out ...` or the Run tab wrote; upload: its CSVs")
    if source == "upload":
        uploads = st.file_uploader("Few-shot CSVs", type=["csv"], accept_multiple_files=True, key="fs_upload")
        folder = Path("upload")
        summary, runs = read_upload(uploads) if uploads else (None, None)
    elif source == "results folder":
        folder = Path(st.text_input("Results folder", key=keep("fs_dir", str(own)),
                                    help=f"a folder written by `tpv experiment fewshot --out ...` ({RUNS}, {SUMMARY})"))
        summary, runs = read_results(folder)
    else:
        folder = BUNDLED[source]
        summary, runs = read_results(folder)
        st.caption(f"Shipped with the repository: `{folder.relative_to(ui.APP_DIR)}` (see docs/REPRODUCTION.md for "
                   "the command that regenerates it).")
    if summary is None or summary.empty:
        st.info(f"No few-shot results in `{folder}` yet: run the experiment in the **Run** tab, with "
                "`tpv experiment fewshot`, upload its CSVs, or look at the bundled results.", icon=":material/info:")
    else:
        targets = list(dict.fromkeys(summary["target"]))
        target = (st.selectbox("Target task", targets, key=keep("fs_target", targets[0], options=targets))
                  if len(targets) > 1 else targets[0])
        sub = summary[summary["target"] == target].sort_values(["init", "k"])
        metric = metric_of(target, runs)
        fig = plots.fewshot_curve(sub, title=f"Few-shot {target}: test {metric} against k, per initialisation "
                                             "(95% intervals over the runs: origins x data seeds)", metric=metric)
        st.plotly_chart(fig, width="stretch", key="fs_chart")
        ui.export_buttons(fig, sub, f"fewshot_{target}", key="fs_export")
        st.dataframe(sub, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("mean", "std", "ci_low", "ci_high")})
        st.caption("Intervals: 95% t-intervals of the mean over the paired runs (origin x data seed; n per point).")
        if runs is not None and "init" in runs.columns:
            from tpv_core.experiments.paired import paired_tests

            tests = paired_tests(runs[runs["target"] == target])
            if not tests.empty:
                st.markdown("**Paired comparisons** (same origin, same k rows and batch order)")
                st.dataframe(tests.drop(columns=["target"]), hide_index=True, width="stretch",
                             column_config={c: st.column_config.NumberColumn(format="%.3f")
                                            for c in ("mean_diff", "ci_low", "ci_high", "p_wilcoxon", "p_ttest")})
                st.caption("mean_diff: a minus b over the cells both ran, with its 95% t-interval; p_wilcoxon: "
                           "two-sided Wilcoxon signed-rank test; p_ttest: two-sided paired t-test; best_spot: the "
                           "SPoT source with the higher mean at that k.")
        if runs is not None:
            with st.expander(f"{len(runs)} individual runs"):
                st.dataframe(runs, hide_index=True, width="stretch")

# ---------------------------------------------------------------------------------------- run
with tab_run:
    from tpv_core.app.job_bodies import submit_fewshot
    from tpv_core.experiments.fewshot import GROUPS, INITS, init_names
    from tpv_core.workflows.fewshot import FewshotRequest

    df, _ = ui.store_index(root)
    if df.empty:
        st.info(f"The experiment needs source prompts in the store (`{root}`).", icon=":material/info:")
    else:
        c1, c2, c3 = st.columns(3)
        bb_name = ui.selected_backbone(df, key="fs_bb", container=c1)
        dfb = df[(df["backbone"] == bb_name) & (df["source"] != "combination")]
        from tpv_core.tasks import list_tasks

        all_tasks = [t.name for t in list_tasks(root)]
        stored = sorted(dfb["task"].unique())
        group = next((g for g in GROUPS.values() if set(g[0]) <= set(stored)), None)
        tgt_default = group[1][0] if group else next((t for t in all_tasks if t not in stored), all_tasks[0])
        target = c2.selectbox("Target task", all_tasks, key=keep("fs_run_target", tgt_default, options=all_tasks))
        sources = c3.multiselect("Source tasks (stored prompts)", [t for t in stored if t != target],
                                 key=keep(ui.root_key(f"fs_sources_{target}"),
                                          [t for t in (group[0] if group else stored[:2]) if t != target],
                                          options=[t for t in stored if t != target]))
        c1, c2, c3, c4, c5 = st.columns(5)
        ks = c1.multiselect("k (shots)", [0, 5, 10, 25, 50, 100, 250, 500, 1000], key=keep("fs_ks", [0, 5, 10]))
        inits = c2.multiselect("Initialisations", list(INITS), key=keep("fs_inits", ["random", "spot", "tpv"], options=list(INITS)),
                               help="multitask tunes a prompt on the union of the sources first (slow) unless the "
                                    "store has one")
        steps = int(c3.number_input("Steps per run", min_value=1, key=keep("fs_steps", 20)))
        limit = int(c4.number_input("Test rows", min_value=16, step=16, key=keep("fs_limit", 200)))
        val_rows = int(c5.number_input("Validation rows", min_value=8, step=8, key=keep("fs_val", 64),
                                       help="scored twice per run to keep the best prompt"))
        seed_sets = [set(dfb.loc[dfb["task"] == s, "seed"]) for s in sources]
        seeds_avail = sorted(set.intersection(*seed_sets)) if seed_sets else []
        c1, c2 = st.columns([3, 1])
        seeds = c1.multiselect("Origin seeds (common to the sources)", seeds_avail,
                               key=keep(ui.root_key("fs_seeds"), seeds_avail[:2], options=seeds_avail))
        n_data = int(c2.number_input("Data seeds per origin", min_value=1, max_value=10, key=keep("fs_data_seeds", 1),
                                     help="each (origin, data seed) is one paired cell: the data seed draws the k "
                                          "rows and the batch order, shared by every init; 1 = the origin's own seed"))
        out_dir = st.text_input("Output folder", key=keep("fs_out", str(Path(st.session_state["results_dir"]) / "fewshot")),
                                help="re-running resumes from its CSV")
        request = FewshotRequest(target=target, sources=tuple(sources), out=out_dir, store_root=root, ks=tuple(ks),
                                 seeds=tuple(seeds), data_seeds=tuple(range(n_data)) if n_data > 1 else None,
                                 inits=tuple(inits), steps=steps, limit=limit, eval_limit=val_rows,
                                 eval_every=max(1, steps // 2))
        n_inits = len(init_names(inits, sources))
        n_runs = request.planned_runs() or 0
        st.caption(f"{n_runs} runs ({len(ks)} k × {n_inits} inits × {len(seeds)} origins"
                   + (f" × {n_data} data seeds; k = 0 once per origin" if n_data > 1 else "") + f"), each {steps} steps + "
                   f"{limit} test rows; it runs in the job queue, after any training job.")
        if st.button("Run the experiment", type="primary", icon=":material/play_arrow:", key="fs_go",
                     disabled=not (sources and ks and inits and seeds)):
            job_id = submit_fewshot(queue, request, bb_name, ui.model_cache().get)
            st.session_state["my_jobs"] = [*st.session_state["my_jobs"], job_id]
            st.session_state["fs_job"] = job_id

        job_id = st.session_state.get("fs_job")

        @st.fragment(run_every=1 if queue.active() else None)
        def fs_progress() -> None:
            if job_id is None:
                return
            try:
                j = queue.get(job_id)
            except KeyError:
                return
            if j.state in (QUEUED, RUNNING):
                st.progress(j.fraction, text=f"{j.state}: {j.message or 'waiting'} · {ui.fmt_s(j.elapsed_s)}")
                if st.button("Cancel", key="fs_cancel", icon=":material/stop:"):
                    queue.cancel(job_id)
            elif j.state == FAILED:
                st.error(j.error or "failed")
            else:
                st.success(f"{j.state}: results in `{(j.result or {}).get('out', out_dir)}` "
                           "(shown in the Results tab)" if j.state == "done" else j.state)
                if j.state == "done" and st.session_state.get("fs_shown") != job_id:
                    st.session_state["fs_shown"] = job_id
                    st.session_state["fs_dir_next"] = (j.result or {}).get("out", out_dir)
                    st.rerun(scope="app")

        fs_progress()
