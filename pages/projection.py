"""Projection: UMAP (and PCA) of task prompt vectors, coloured by task, marker by origin, one panel per
backbone; and the cross-model geometry number (do two backbones arrange the tasks alike?)."""

import dataclasses
import os

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pages._state import keep
from tpv_core import plots, projection
from tpv_core import similarity as sim
from tpv_core.workflows.analysis import geometry_table, task_similarity

ui.page_setup("Projection")
root, df = ui.store_or_stop()


@st.cache_data(show_spinner=False, max_entries=32)
def projected(paths: tuple[str, ...], signature: tuple, what: str, method: str, n_neighbors: int, flat: str = "flat"):
    """The projection, with each point's norm (of the flattened tensor, or of its token mean)."""
    items = sim.collect([ui.prompt_at(p) for p in paths], what)
    if flat == "token-mean":  # the mean over the L prompt rows: a d-vector per prompt
        items = [dataclasses.replace(it, tensor=it.tensor.float().mean(0, keepdim=True)) for it in items]
    coords, note = projection.project(items, method=method, n_neighbors=n_neighbors)
    norms = {(it.backbone, it.task, it.origin): float(it.tensor.float().norm()) for it in items}
    if not coords.empty:
        coords = coords.assign(norm=[norms.get((b, t, o)) for b, t, o in
                                     zip(coords["backbone"], coords["task"], coords["origin"], strict=True)])
    return coords, note


@st.cache_data(show_spinner=False, max_entries=32)
def task_matrices(paths: tuple[str, ...], signature: tuple, definition: str) -> dict[str, pd.DataFrame]:
    return task_similarity(sim.collect([ui.prompt_at(p) for p in paths], "vector"), [definition]).means(definition)


# ---------------------------------------------------------------------------------------- controls
bbs, tasks, chosen_origins = ui.selection_filters(df, "proj", "Backbones (one panel each)")
c1, c2, c3, c4 = st.columns(4)
method = c1.radio("Method", ["umap", "pca"], horizontal=True, key=keep("proj_method", "umap"),
                  format_func={"umap": "UMAP (cosine)", "pca": "PCA"}.get)
what = c2.radio("Project", ["vector", "prompt"], horizontal=True, key=keep("proj_what", "vector"),
                format_func={"vector": "vectors τ = P − P0", "prompt": "prompts P"}.get)
flat = c3.radio("As", ["flat", "token-mean"], horizontal=True, key=keep("proj_flat", "flat"),
                format_func={"flat": "flattened L×d", "token-mean": "token mean (d)"}.get,
                help="token mean: the mean over the L prompt rows, so prompts of different lengths compare")
n_neighbors = int(c4.slider("UMAP neighbours", 2, 50, key=keep("proj_nn", 15), disabled=method != "umap",
                            help="clamped to the number of points − 1"))
search = st.text_input("Find a task", key=keep("proj_search", ""), placeholder="e.g. sst2: its points are drawn "
                       "large, the others faded", help="matches task names containing this text")

sel = df[df["backbone"].isin(bbs) & df["task"].isin(tasks) & df["origin"].isin(chosen_origins)]
if sel.empty:
    st.info("Nothing selected.")
    st.stop()
paths = tuple(sel["path"])
sig = tuple(os.stat(p).st_mtime_ns for p in paths)
what_label = {"vector": "task prompt vectors", "prompt": "soft prompts"}[what]


def show(coords: pd.DataFrame, note: str, used: str) -> None:
    title = f"{used.upper()} of {len(coords)} {what_label} ({'token mean' if flat == 'token-mean' else 'flattened'})"
    fig = plots.projection_scatter(coords, title=title, highlight=search)
    st.plotly_chart(fig, width="stretch", key="proj_chart")
    if search.strip():
        hits = sorted({t for t in coords["task"].astype(str) if search.strip().lower() in t.lower()})
        st.caption(f"Highlighted: {', '.join(hits)}" if hits else f"No task matches “{search}”.")
    st.caption(note)
    ui.export_buttons(fig, coords, f"projection_{used}_{what}", key="proj_export")


# ---------------------------------------------------------------------------------------- the figure
ui.umap_now()
pca = projected(paths, sig, what, "pca", n_neighbors, flat)
warm = ui.umap_warmup()
if method == "pca":
    show(*pca, "pca")
elif warm is None or warm.ready.is_set():
    with st.spinner("UMAP…"):
        show(*projected(paths, sig, what, "umap", n_neighbors, flat), "umap")
else:
    @st.fragment(run_every=1)
    def umap_pending() -> None:
        if warm.ready.is_set():
            st.rerun(scope="app")
        st.info("UMAP is warming up in the background (its first fit in a process takes 10–20 s); showing PCA "
                "until it is ready.", icon=":material/hourglass_top:")

    umap_pending()
    show(*pca, "pca")

# ---------------------------------------------------------------------------------------- cross-model geometry
st.subheader("Cross-model geometry")
definition = st.radio("Cosine of", sim.DEFINITIONS, horizontal=True, key=keep("proj_geo_def", sim.DEFINITIONS[0]),
                      format_func={"flat": "flattened L×d", "token-mean": "token mean (d)"}.get)
if len(bbs) < 2:
    st.caption("Prompts of different backbones live in different spaces (widths differ), so they are compared "
               "through their geometry: the correlation of the backbones' task × task similarity matrices "
               "(Spearman, Mantel permutation p-value). Select prompts of at least two backbones.")
else:
    mats = task_matrices(paths, sig, definition)
    table = geometry_table({(bb, definition): mats[bb] for bb in bbs if bb in mats})
    rows = []
    for r in table.to_dict("records"):
        if isinstance(r.get("note"), str) or "r" not in r:
            rows.append({"backbone A": r["backbone_a"], "backbone B": r["backbone_b"], "note": r.get("note")})
        else:
            rows.append({"backbone A": r["backbone_a"], "backbone B": r["backbone_b"], "r (Spearman)": r["r"],
                         "p (Mantel)": r["p_value"], "shared tasks": r["n_tasks"], "task pairs": r["n_pairs"]})
    if not rows:
        st.caption("Need task similarities for at least two backbones (two origins per task).")
    else:
        geo = pd.DataFrame(rows)
        if len(geo) == 1 and "r (Spearman)" in geo and pd.notna(geo["r (Spearman)"].iloc[0]):
            r = geo.iloc[0]
            st.metric(f"{r['backbone A']} vs {r['backbone B']}: geometry correlation", f"{r['r (Spearman)']:.3f}",
                      help=f"p = {r['p (Mantel)']:.3g} over {int(r['shared tasks'])} shared tasks")
        st.dataframe(geo, hide_index=True, width="stretch")
        st.download_button("CSV", data=plots.export_table(geo), file_name=f"geometry_{definition}.csv",
                           mime="text/csv", key="proj_geo_csv", on_click="ignore", icon=":material/download:")
