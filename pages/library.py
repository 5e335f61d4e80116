"""Library: the prompt store as a table; import and export PEFT prompt adapters."""

import pandas as pd
import streamlit as st

from pages import _ui as ui
from tpv_core import peft_io
from tpv_core.workflows.combination import VectorTerm, formula, read_combination

ui.page_setup()
st.title("Prompt library")
if flash := st.session_state.pop("lib_flash", None):
    st.success(flash, icon=":material/check:")
root = ui.store_root()
df, errors = ui.store_index(root)

# ---------------------------------------------------------------------------------------- table
if df.empty:
    st.info(f"No prompts in `{root}` yet. Train some on the **Train** page, import a PEFT adapter below, "
            "or point the sidebar's store root at a folder of prompts.", icon=":material/info:")
else:
    metric_cols = [c for c in df.columns if c.startswith("metric_")]
    c1, c2, c3 = st.columns(3)
    bbs = c1.multiselect("Backbone", sorted(df["backbone"].unique()), key=ui.root_key("lib_bb"))
    tasks = c2.multiselect("Task", sorted(df["task"].unique()), key=ui.root_key("lib_task"))
    seeds = c3.multiselect("Origin", sorted(df["origin"].unique()), key=ui.root_key("lib_origin"))
    view = df
    if bbs:
        view = view[view["backbone"].isin(bbs)]
    if tasks:
        view = view[view["task"].isin(tasks)]
    if seeds:
        view = view[view["origin"].isin(seeds)]
    shown = view[["backbone", "task", "origin", *metric_cols, "steps", "wall_time_s", "length", "dim", "source",
                  "created"]].rename(columns={c: c.removeprefix("metric_") for c in metric_cols})
    shown["created"] = pd.to_datetime(shown["created"], errors="coerce", utc=True)
    st.dataframe(
        shown, hide_index=True, width="stretch",
        column_config={
            "created": st.column_config.DatetimeColumn("date", format="YYYY-MM-DD HH:mm"),
            "wall_time_s": st.column_config.NumberColumn("train time (s)", format="%.0f"),
            **{c.removeprefix("metric_"): st.column_config.NumberColumn(format="%.3f") for c in metric_cols},
        },
    )
    n_bb, n_task, n_origin = df["backbone"].nunique(), df["task"].nunique(), df["origin"].nunique()
    st.caption(f"{len(view)} of {len(df)} prompts · {n_bb} backbone(s), {n_task} task(s), {n_origin} origin(s) "
               f"· `{root}`")
if errors:
    with st.expander(f"{len(errors)} unreadable file(s) skipped", icon=":material/warning:"):
        for e in errors:
            st.text(e)

left, right = st.columns(2, gap="large")

# ---------------------------------------------------------------------------------------- export
with left:
    st.subheader("Export as a PEFT adapter")
    if df.empty:
        st.caption("Nothing to export yet.")
    else:
        labels = {f"{r.backbone} · {r.task} · {r.origin}": r.path for r in df.itertuples()}
        choice = st.selectbox("Prompt", list(labels), key=ui.root_key("lib_export_choice"))
        what = st.radio("Export", ["prompt P", "task prompt vector τ = P − P0"], horizontal=True,
                        key="lib_export_what",
                        help="A prompt adapter loads with peft.PeftModel.from_pretrained. The vector is packed in "
                             "the same container (prompt_embeddings = τ) with a metadata file naming its origin.")
        prompt = ui.run_with(lambda: ui.prompt_at(labels[choice]), "cannot read the prompt")
        if prompt is not None:
            family = prompt.metadata.get("backbone_family") or ui.family_of(prompt.backbone) or "decoder"
            is_vec = what.startswith("task")
            stem = peft_io.adapter_name(f"{prompt.backbone}_{prompt.task}_{prompt.origin.id}"
                                         + ("_vector" if is_vec else ""))
            data = (peft_io.vector_zip if is_vec else peft_io.soft_prompt_zip)(prompt, family=family)
            st.download_button("Download adapter (.zip)", data=data, file_name=f"{stem}.zip", mime="application/zip",
                               key="lib_export_dl", on_click="ignore", icon=":material/download:", type="primary")
            st.caption(f"L={prompt.length}, d={prompt.dim}, PEFT task type of the {family} family; the zip also holds "
                       "`tpv_origin.safetensors` so it imports back with its origin.")
            combo = read_combination(prompt)
            if combo is not None:
                terms = [VectorTerm(v["task"], v["origin"], v["weight"]) for v in combo["vectors"]]
                st.caption("A stored combination: `P = "
                           f"{formula(terms, combo['origin'], combo['method'], combo['lambda'])}`")

# ---------------------------------------------------------------------------------------- import
with right:
    st.subheader("Import a PEFT prompt adapter")
    up = st.file_uploader("Adapter zip (adapter_config.json + adapter_model.safetensors)", type=["zip"],
                          key="lib_import_file")
    if up is not None:
        data = up.getvalue()
        info = ui.run_with(lambda: peft_io.adapter_zip_info(data), "not a usable adapter zip")
        if info is not None:
            cfg, meta = info["config"], info["metadata"]
            st.caption(f"{cfg.get('peft_type')} · {cfg.get('num_virtual_tokens')} virtual tokens × "
                       f"{cfg.get('token_dim')} · base model `{cfg.get('base_model_name_or_path')}`")
            known = [p.name for p in ui.providers()]
            same_width = [] if df.empty else sorted(df.loc[df["dim"] == cfg.get("token_dim"), "backbone"].unique())
            bb_default = meta.get("backbone") or (same_width or known or [""])[0]
            c1, c2 = st.columns(2)
            bb_name = c1.text_input("Backbone name", value=bb_default, key="lib_import_bb",
                                    help="the model the prompt belongs to: " + ", ".join(known))
            task_name = c2.text_input("Task", value=meta.get("task") or "", key="lib_import_task")
            sources = (["origin file in the zip"] if info["has_origin"] else []) + ["make the origin from a seed"]
            how = st.radio("Origin P0", sources, key="lib_import_origin_how", horizontal=True,
                           help="PEFT stores no origin; our exports carry one. Otherwise name the seed, kind and "
                                "length it was tuned from (needs the backbone's embeddings).")
            kind, seed = "vocab", 0
            if how.startswith("make"):
                c1, c2, c3 = st.columns(3)
                kind = c1.selectbox("Kind", ["vocab", "normal", "uniform"], key="lib_import_kind")
                seed = int(c2.number_input("Seed", min_value=0, value=0, step=1, key="lib_import_seed"))
                c3.number_input("Length L", value=int(cfg.get("num_virtual_tokens") or 0), disabled=True,
                                key="lib_import_len", help="taken from the adapter")
            replace = st.checkbox("Replace a stored prompt with the same task and origin", key="lib_import_replace")
            if st.button("Import into the store", type="primary", key="lib_import_go",
                         disabled=not (bb_name and task_name)):
                try:
                    origin = None
                    if how.startswith("make"):
                        from tpv_core.prompts import make_origin

                        bb = ui.backbone(bb_name)
                        origin = make_origin(bb, kind=kind, seed=seed, length=int(cfg.get("num_virtual_tokens")))
                    prompt = peft_io.import_adapter_zip(data, task=task_name, backbone=bb_name, origin=origin)
                    path = ui.store().save(prompt, overwrite=replace)  # exists and not replace: an error below
                    st.session_state["lib_flash"] = f"Imported {prompt.task} ({prompt.origin.id}) into {path}"
                    st.rerun()
                except Exception as exc:  # noqa: BLE001
                    ui.error_box(exc, "import failed")
