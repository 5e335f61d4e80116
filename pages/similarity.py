"""Similarity: cosine heatmaps of task prompt vectors (or prompts) across tasks, origins and backbones."""

import os

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pages._state import keep
from tpv_core import plots
from tpv_core import similarity as sim
from tpv_core.prompts import PromptMismatchError
from tpv_core.workflows.analysis import TaskSimilarity, task_similarity

ui.page_setup("Cosine similarity")
root, df = ui.store_or_stop()


@st.cache_data(show_spinner="Computing cosine similarities…", max_entries=32)
def pair_table(paths: tuple[str, ...], signature: tuple, what: str, definition: str) -> pd.DataFrame:
    return sim.similarity_table(sim.collect([ui.prompt_at(p) for p in paths], what), definition)


@st.cache_data(show_spinner="Aggregating per task…", max_entries=32)
def task_similarity_of(paths: tuple[str, ...], signature: tuple, what: str, definition: str, same: str,
                       order: tuple[str, ...]) -> TaskSimilarity:
    return task_similarity(sim.collect([ui.prompt_at(p) for p in paths], what), [definition], same_origin=same,
                           order=order)


@st.cache_data(show_spinner=False, max_entries=32)
def item_matrix(paths: tuple[str, ...], signature: tuple, what: str, definition: str) -> pd.DataFrame:
    return sim.per_item_matrix(sim.collect([ui.prompt_at(p) for p in paths], what), definition)


# ---------------------------------------------------------------------------------------- controls
bbs, tasks, chosen_origins = ui.selection_filters(df, "sim")

c1, c2, c3, c4 = st.columns(4)
definition = c1.radio("Cosine of", sim.DEFINITIONS, horizontal=True, key=keep("sim_def", sim.DEFINITIONS[0]),
                      format_func={"flat": "flattened L×d", "token-mean": "token mean (d)"}.get,
                      help="flat: cosine of the flattened tensors (positions matter); token-mean: cosine of the "
                           "mean over the L prompt rows")
what = c2.radio("Compare", ["vector", "prompt"], horizontal=True, key=keep("sim_what", "vector"),
                format_func={"vector": "vectors τ = P − P0", "prompt": "prompts P"}.get)
view = c3.radio("Aggregate", ["task", "item"], horizontal=True, key=keep("sim_view", "task"),
                format_func={"task": "by task", "item": "per (task, origin)"}.get)
same = c4.selectbox("Same-origin pairs", sim.SAME_ORIGIN_MODES, key=keep("sim_same", sim.SAME_ORIGIN_MODES[0]),
                    disabled=view != "task",
                    help="exclude: average only pairs from different origins (the default); only: pairs that "
                         "share P0; include: all pairs")
c1, c2, c3 = st.columns(3)
show_numbers = c1.toggle("Numbers in cells (where they fit)", key=keep("sim_numbers", True))
clustered = c2.toggle("Order by similarity (clustered)", key=keep("sim_cluster", False),
                      help="rows and columns in the leaf order of an average-linkage clustering of 1 − cosine")
fixed = c3.toggle("Fixed scale [−1, 1]", key=keep("sim_fixed", False),
                  help="off: the colour scale follows the data, symmetric around 0 (its range is shown)")

sel = df[df["backbone"].isin(bbs) & df["task"].isin(tasks) & df["origin"].isin(chosen_origins)]
if len(sel) < 2:
    st.info("Select at least two prompts to compare.")
    st.stop()
sig = tuple(os.stat(p).st_mtime_ns for p in sel["path"])

# ---------------------------------------------------------------------------------------- heatmaps
scale_note: list[str] = []


def figure(mats: dict, title: str, ns: dict | None = None, stds: dict | None = None):
    """One heatmap (or one panel per backbone): rows and columns in one order (clustered on request), the
    colour scale symmetric around 0 following the data unless fixed, numbers only where a cell can hold them."""
    if clustered:
        for bb, m in mats.items():
            order = plots.cluster_order(m)
            mats[bb] = m.loc[order, order]
    lim = 1.0 if fixed else plots.symmetric_range(list(mats.values()))
    n_cols = sum(len(m.columns) for m in mats.values())
    text = show_numbers and plots.cell_text_fits(n_cols)
    scale_note.append(f"colour scale [−{lim:g}, {lim:g}]" + (" (fixed)" if fixed else " (follows the data)")
                      + ("" if text or not show_numbers else " · numbers hidden: the cells are too small; hover a cell"))
    if len(mats) == 1:
        (bb, m), = mats.items()
        return plots.heatmap(m, title=f"{bb}: {title}", text=text, zmin=-lim, zmax=lim,
                             n=(ns or {}).get(bb), std=(stds or {}).get(bb))
    return plots.heatmap_grid(mats, title=title, text=text, zmin=-lim, zmax=lim, n=ns, std=stds)


label = {"vector": "task prompt vectors", "prompt": "soft prompts"}[what]
try:
    if view == "task":
        result = task_similarity_of(tuple(sel["path"]), sig, what, definition, same, tuple(tasks))
        if result.pairs.empty:
            st.info("No comparable pairs (each backbone needs two prompts of the same shape).")
            st.stop()
        agg = result.by_task
        found = {bb: m for (bb, _d), m in result.matrices.items()}
        mats = {bb: found[bb].mean for bb in bbs if bb in found}
        ns = {bb: found[bb].n for bb in mats}
        stds = {bb: found[bb].std for bb in mats}
        title = f"Cosine ({definition}) of {label}, mean over {same.replace('exclude', 'cross-origin')} pairs"
        fig = figure(mats, title, ns, stds)
        table = agg
        stem = f"similarity_by_task_{definition}_{what}"
    else:
        mats = {}
        for bb in bbs:
            part = sel[sel["backbone"] == bb].sort_values(["task", "seed"])
            if len(part) >= 2:
                mats[bb] = item_matrix(tuple(part["path"]), tuple(os.stat(p).st_mtime_ns for p in part["path"]),
                                       what, definition)
        if not mats:
            st.info("Each backbone needs at least two prompts.")
            st.stop()
        title = f"Cosine ({definition}) of {label}, per (task, origin)"
        fig = figure(mats, title)
        table = pair_table(tuple(sel["path"]), sig, what, definition)
        stem = f"similarity_per_item_{definition}_{what}"
except PromptMismatchError as exc:
    st.warning(f"These prompts cannot be compared this way: {exc}. Try the token-mean cosine or one prompt "
               "length.", icon=":material/warning:")
    st.stop()

st.plotly_chart(fig, width="stretch", key="sim_chart")
st.caption(" · ".join(scale_note))
ui.export_buttons(fig, table, stem, key="sim_export")
if view == "task":
    st.caption("Hover a cell for the mean cosine, its std and the number of pairs n. The diagonal compares "
               "different origins of the same task.")
with st.expander("Pairs table"):
    st.dataframe(table, hide_index=True, width="stretch")
