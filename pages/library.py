"""Library: the prompt store as a table; import and export PEFT prompt adapters."""

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pages._state import keep

ui.page_setup("Prompt library")
if flash := st.session_state.pop("lib_flash", None):
    st.success(flash, icon=":material/check:")
root = ui.store_root()
df, errors = ui.store_index(root)

# ---------------------------------------------------------------------------------------- table
if df.empty:
    st.info(f"No prompts in `{root}` yet. Train some on the **Train** page, import a PEFT adapter below, "
            "or point the sidebar's store root at a folder of prompts.", icon=":material/info:")
else:
    c1, c2, c3 = st.columns(3)
    opts = {c: sorted(df[c].unique()) for c in ("backbone", "task", "origin")}
    bbs = c1.multiselect("Backbone", opts["backbone"], key=keep(ui.root_key("lib_bb"), [], options=opts["backbone"]))
    tasks = c2.multiselect("Task", opts["task"], key=keep(ui.root_key("lib_task"), [], options=opts["task"]))
    seeds = c3.multiselect("Origin", opts["origin"], key=keep(ui.root_key("lib_origin"), [], options=opts["origin"]))
    view = df
    if bbs:
        view = view[view["backbone"].isin(bbs)]
    if tasks:
        view = view[view["task"].isin(tasks)]
    if seeds:
        view = view[view["origin"].isin(seeds)]
    # each prompt's own validation metric (val_pearson is STS-B's, val_accuracy a classifier's): one
    # "metric" + "score" pair per row instead of a sparse column per metric full of empty cells
    metric_cols = [c for c in df.columns if c.startswith("metric_")]
    shown = view[["backbone", "task", "origin", "steps", "wall_time_s", "length", "dim", "source", "created"]].copy()
    own = [next(((c, v) for c, v in row.items() if pd.notna(v)), ("", None)) for _, row in view[metric_cols].iterrows()]
    shown.insert(3, "metric", [c.removeprefix("metric_") for c, _ in own])
    shown.insert(4, "score", pd.to_numeric(pd.Series([v for _, v in own], index=view.index, dtype="object"),
                                           errors="coerce"))
    shown["created"] = pd.to_datetime(shown["created"], errors="coerce", utc=True)
    st.dataframe(
        shown, hide_index=True, width="stretch",
        column_config={
            "created": st.column_config.DatetimeColumn("date", format="YYYY-MM-DD HH:mm"),
            "wall_time_s": st.column_config.NumberColumn("train time (s)", format="%.0f"),
            "score": st.column_config.NumberColumn("val score", format="%.3f",
                                                   help="the prompt's best validation score during training"),
        },
    )
    n_bb, n_task, n_origin = view["backbone"].nunique(), view["task"].nunique(), view["origin"].nunique()
    st.caption(f"Shown: {len(view)} of {len(df)} prompts · {n_bb} backbone(s), {n_task} task(s), {n_origin} "
               "origin(s) among the shown rows · val score: each task's own selection metric (metric column)")
    st.caption("**Origin id**, e.g. `vocab5000-s0-L20`: how P0 was made. `vocab5000` = embeddings of tokens "
               "sampled from the first 5,000 vocabulary ids (the paper; `normal` / `uniform`: random draws); "
               "`s0` = seed 0; `L20` = prompt length 20 tokens. Prompts with the same origin id share P0.")
if errors:
    with st.expander(f"{len(errors)} unreadable file(s) skipped", icon=":material/warning:"):
        for e in errors:
            st.text(e)

left, right = st.columns(2, gap="large")

# ---------------------------------------------------------------------------------------- export
# imported after the table is on screen: PEFT io and combinations load torch (seconds at launch)
from tpv_core import peft_io  # noqa: E402
from tpv_core.workflows.combination import VectorTerm, formula, read_combination  # noqa: E402

with left:
    st.subheader("Export as a PEFT adapter")
    if df.empty:
        st.caption("Nothing to export yet.")
    else:
        labels = {f"{r.backbone} · {r.task} · {r.origin}": r.path for r in df.itertuples()}
        choice = st.selectbox("Prompt", list(labels), key=keep(ui.root_key("lib_export_choice"), next(iter(labels)),
                                                              options=list(labels)))
        what = st.radio("Export", ["prompt P", "task prompt vector τ = P − P0"], horizontal=True,
                        key=keep("lib_export_what", "prompt P"),
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
