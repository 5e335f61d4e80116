"""Combine: weighted sums of task prompt vectors, evaluated live as the sliders move."""

import os
import time

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pages._state import follow, keep
from tpv_core import combine, peft_io
from tpv_core.app import appstate
from tpv_core.evaluation import interleaved_evaluation, metric_interval
from tpv_core.prompts import PromptMismatchError
from tpv_core.workflows.combination import combine_prompts, save_combination
from tpv_core.tasks import is_builtin, list_tasks

ui.page_setup("Combine task prompt vectors")
root, df = ui.store_or_stop()

# ---------------------------------------------------------------------------------------- choices
c1, c2, c3 = st.columns([1, 1, 1])
bb_name = ui.selected_backbone(df, key="cmb_bb", container=c1)
dfb = df[df["backbone"] == bb_name]
# the origins of the most common prompt length first (a zoo's demo prompts before a few paper-recipe ones), by seed
first = dfb.drop_duplicates("origin").set_index("origin")
common = ui.common_length(first)
origins = sorted(first.index, key=lambda o: (int(first.at[o, "length"]) != common, int(first.at[o, "length"]),
                                             first.at[o, "seed"], o))
origin_id = c2.selectbox("Origin P0", origins, key=keep(ui.root_key(f"cmb_origin_{bb_name}"), origins[0], options=origins),
                         help="the stored origin the sum is applied to")
methods = list(combine.MERGE_METHODS)
method = c3.selectbox("Method", methods, key=keep("cmb_method", "sum" if "sum" in methods else methods[0], options=methods),
                      help="sum: P0 + Σ wᵢ τᵢ (the paper); others are merge methods over the weighted vectors")

vec_rows = {f"{r.task} · {r.origin}": r for r in dfb.itertuples()}
same_origin = [k for k, r in vec_rows.items() if r.origin == origin_id and r.source != "combination"]
vectors_sel = st.multiselect("Task prompt vectors", list(vec_rows),  # each origin remembers its own choice
                             key=keep(ui.root_key(f"cmb_vecs_{bb_name}_{origin_id}"), same_origin[:2], options=list(vec_rows)),
                             help="τ = P − P0 of stored prompts; vectors from another origin are allowed "
                                  "(cross-origin) when their shapes match")
known_tasks = [t.name for t in list_tasks(root)]
vec_tasks = [vec_rows[v].task for v in vectors_sel]
default_eval = [t for t in dict.fromkeys(vec_tasks) if t in known_tasks]
c1, c2 = st.columns([3, 1])
eval_key = ui.root_key(f"cmb_eval_{bb_name}")
follow(eval_key, default_eval)  # follows the chosen vectors' tasks until the user edits it
eval_tasks = c1.multiselect("Evaluate on", known_tasks, key=keep(eval_key, default_eval, options=known_tasks),
                            help="follows the chosen vectors' tasks until you change it")
ROW_CHOICES = ["all", 500, 200, 100, 50]
env_rows = appstate.default_combine_rows()  # $TPV_COMBINE_ROWS: a smaller default for slow machines
if env_rows not in ROW_CHOICES:
    ROW_CHOICES.append(env_rows)
limit_choice = c2.selectbox("Validation rows", ROW_CHOICES, key=keep("cmb_limit", env_rows, options=ROW_CHOICES),
                            help="the estimate refines batch by batch up to this many rows of each task's "
                                 "(shuffled) validation split")
limit = None if limit_choice == "all" else int(limit_choice)
if not vectors_sel:
    st.info("Pick at least one vector.")
    st.stop()

# ---------------------------------------------------------------------------------------- sliders
st.markdown("**Weights**")
weights = []
cols = st.columns(min(len(vectors_sel), 4))
for i, label in enumerate(vectors_sel):
    r = vec_rows[label]
    w = cols[i % len(cols)].slider(label, min_value=-1.0, max_value=2.0, step=0.05,
                                   key=keep(f"w_{bb_name}_{r.task}_{r.origin}", 1.0))
    weights.append(float(w))

try:
    prompts = [ui.prompt_at(vec_rows[v].path) for v in vectors_sel]
    origin = next(ui.prompt_at(r.path) for r in dfb.itertuples() if r.origin == origin_id).origin
    combo = combine_prompts(prompts, weights, origin, method=method)
    combined = combo.tensor
except (PromptMismatchError, ValueError) as exc:
    ui.error_box(exc, "cannot combine these vectors")
    st.stop()
st.code(f"P = {combo.label}", language=None)  # literal text: no Markdown italics, each term with its origin
st.caption(f"‖τ‖ = {combo.tau.norm():.3f} · L={origin.length}, d={origin.dim} · task[sN]: the vector of that "
           "task tuned from origin seed N")

# ---------------------------------------------------------------------------------------- live evaluation
try:
    bb = ui.backbone(bb_name)
except Exception as exc:  # noqa: BLE001 - e.g. a hub model while offline, a missing model package
    ui.error_box(exc, f"cannot load {bb_name}")
    st.stop()
status = st.empty()
table = st.empty()
singles = {t: dfb[(dfb["task"] == t) & (dfb["origin"] == origin_id)] for t in eval_tasks}
SURE_ROWS = 100  # below this many rows an estimate is shown grey, with its interval


def single_path(t: str) -> str | None:
    return None if singles[t].empty else singles[t].iloc[0]["path"]


def render(results: dict, single_scores: dict) -> pd.DataFrame:
    rows = []
    for t in eval_tasks:
        res = results.get(t)
        lo, hi = (None, None) if res is None else res.get("ci", (None, None))
        rows.append({
            "task": t,
            "combined": None if res is None else res["main"],
            "95% interval": "–" if lo is None or lo != lo else f"{lo:.3f} – {hi:.3f}",
            "rows scored": "–" if res is None else f"{res['n']}/{res['total']}",
            "single-task (same origin)": single_scores.get(t),
            "_n": 0 if res is None else res["n"],
            "_final": res is not None and res["n"] >= res["total"],
        })
    out = pd.DataFrame(rows)
    out["Δ vs single"] = out["combined"] - out["single-task (same origin)"]
    shown = out.drop(columns=["_n", "_final"])
    grey = [(n < SURE_ROWS and not fin) for n, fin in zip(out["_n"], out["_final"], strict=True)]
    styled = shown.style.apply(lambda r: ["color: #9aa0a6" if grey[r.name] else "" for _ in r], axis=1)
    styled = styled.format({c: (lambda v: "–" if v is None or v != v else f"{v:.3f}")
                            for c in ("combined", "single-task (same origin)", "Δ vs single")})
    table.dataframe(styled, hide_index=True, width="stretch")
    return shown


def with_interval(prep, res) -> dict:
    """The running result as a dict with a 95% interval over the rows scored so far (Wilson for accuracy,
    a bootstrap otherwise)."""
    out = {"main": res.main, "n": res.n, "total": res.total, **res.metrics}
    out["ci"] = metric_interval(prep.task, res.predictions, res.scored_rows(prep.rows),
                                n_boot=20 if res.partial else 100)
    return out


if not eval_tasks:
    st.info("Pick the tasks to evaluate on.")
else:
    key = (bb_name, origin_id, tuple(vec_rows[v].path for v in vectors_sel), tuple(weights), method,
           tuple(eval_tasks), limit, root)
    cache = st.session_state.setdefault("combo_cache", {})
    # single-task scores first, from the caches (this process, then the disk): no evaluation here
    single_scores: dict = {}
    for t in eval_tasks:
        if (path := single_path(t)) is not None:
            got = ui.cached_prompt_score(bb_name, path, t, "validation", limit)
            if got is not None:
                single_scores[t] = got["main"]
    if key in cache:
        results = cache[key]
    else:
        t_run = st.session_state.get("_run_started", time.perf_counter())
        results = {}
        try:
            prepared = {t: ui.prepared_split(bb_name, t, "validation", limit, root) for t in eval_tasks}
            total = sum(len(p) for p in prepared.values())
            first = None
            for name, res in interleaved_evaluation(bb, combined, prepared, batch_size=16):
                results[name] = with_interval(prepared[name], res)
                render(results, single_scores)
                done = sum(r["n"] for r in results.values())
                if first is None:
                    first = time.perf_counter() - t_run
                    st.session_state["combine_first_estimate_s"] = first
                status.caption(f":material/hourglass_top: estimating… {done}/{total} validation rows "
                               f"(first estimate after {first:.2f} s; grey = fewer than {SURE_ROWS} rows)")
            full = time.perf_counter() - t_run
            st.session_state["combine_full_s"] = full
        except Exception as exc:  # noqa: BLE001
            ui.error_box(exc, "evaluation failed")
            st.stop()
        if len(cache) > 64:
            cache.pop(next(iter(cache)))
        cache[key] = {**results, "_timing": {"first_s": first, "full_s": full}}
        results = cache[key]
    # single-task prompts not cached yet: scored once each (then cached in this process and on disk)
    missing = [t for t in eval_tasks if t not in single_scores and single_path(t) is not None]
    if missing:
        status.caption(":material/hourglass_top: scoring the single-task prompts for comparison (once; cached)…")
    for t in missing:
        path = single_path(t)
        sc = ui.run_with(lambda path=path, t=t: ui.prompt_score(bb_name, path, os.stat(path).st_mtime_ns, t,
                                                                "validation", limit, root),
                         f"scoring the single-task {t} prompt")
        if sc is not None:
            single_scores[t] = sc["main"]
    out = render({k: v for k, v in results.items() if k != "_timing"}, single_scores)
    timing = results.get("_timing", {})
    total = sum(r["total"] for k, r in results.items() if k != "_timing")
    msg = (f":material/check: full validation split: {total} rows" if limit is None
           else f":material/check: done: {total} validation rows (up to {limit} per task)")
    if timing:
        msg += f" · first estimate after {timing['first_s']:.2f} s, all rows after {timing['full_s']:.1f} s"
    status.caption(msg)
    st.session_state["combine_table"] = out

    # ------------------------------------------------------------------------------------ save / export
    st.subheader("Keep this combination")
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    default_name = combo.default_name()
    # keyed by the default: the suggested name follows the weights until the user types their own
    name = c1.text_input("Task name in the store", value=default_name, key=f"cmb_name_{default_name}",
                         help="the weights, vectors and origin are stored in the prompt's metadata")
    combo.scores["validation"] = {r["task"]: r["combined"] for r in out.to_dict("records") if r["combined"] is not None}
    target = (root, bb_name, name, origin.id)

    def save(overwrite: bool) -> None:
        try:
            path = save_combination(ui.store(), combo, name, bb, overwrite=overwrite)
        except FileExistsError:  # there before, or another session saved this name a moment ago: ask
            st.session_state["cmb_confirm"] = target
            return
        except Exception as exc:  # noqa: BLE001
            ui.error_box(exc, "cannot save")
            return
        st.session_state.pop("cmb_confirm", None)
        st.toast(f"{'Replaced' if overwrite else 'Saved'} {name} ({origin.id}) in {path}", icon=":material/check:")

    if c2.button("Save to store", type="primary", icon=":material/save:", key="cmb_save", disabled=not name):
        save(overwrite=False)
    if st.session_state.get("cmb_confirm") == target:
        st.warning(f"The store already holds a prompt called **{name}** from {origin.id} on {bb_name}. "
                   "Replace it with this combination?", icon=":material/warning:")
        k1, k2 = st.columns([1, 4])
        if k1.button("Replace", key="cmb_replace", type="primary"):
            save(overwrite=True)
            st.rerun()
        if k2.button("Keep the stored one", key="cmb_keep"):
            st.session_state.pop("cmb_confirm", None)
            st.rerun()
    stem = f"{bb_name}_{name}_{origin.id}"
    zip_bytes = peft_io.peft_zip(combined, base_model=getattr(bb, "model_id", None) or bb_name, family=bb.family,
                                 origin=origin, metadata={**combo.metadata(bb), "task": name, "backbone": bb_name},
                                 name=stem)
    c3.download_button("PEFT adapter (.zip)", data=zip_bytes, file_name=f"{peft_io.adapter_name(stem)}.zip",
                       mime="application/zip", key="cmb_export", on_click="ignore", icon=":material/download:")
    if all(singles[t].empty for t in eval_tasks):
        st.caption(f"No single-task prompt from {origin_id} for these tasks: train them to compare.")
    if not all(is_builtin(t) for t in eval_tasks):
        st.caption("Custom tasks are evaluated on their own validation split.")
