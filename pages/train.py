"""Train: tune soft prompts for tasks x origins as background jobs (one at a time), into the store."""

import streamlit as st

from pages import _ui as ui
from pages._state import keep
from tpv_core.app.job_bodies import submit_training
from tpv_core.app.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from tpv_core.probe import probe_tasks
from tpv_core.tasks import get_task, list_tasks
from tpv_core.training import FAMILY_DEFAULTS, TrainConfig
from tpv_core.workflows.train import TrainRequest

ui.page_setup("Train soft prompts")
root = ui.store_root()
queue = ui.job_queue()

# ---------------------------------------------------------------------------------------- form
provs = ui.providers()
offline = [p.name for p in provs if getattr(p, "offline_available", True)]
names = offline or [p.name for p in provs] or ["minilm-l6"]
fam_of = {p.name: p.family for p in provs}

c1, c2 = st.columns([1, 2])
bb_options = [*names, "hub model…"]
bb_choice = c1.selectbox("Backbone", bb_options,  # this page's own choice: Combine's backbone does not leak here
                         key=keep("train_bb", "minilm-l6" if "minilm-l6" in names else names[0], options=bb_options),
                         help="embedded offline models first; a hub id needs network access")
bb_name = bb_choice
if bb_choice == "hub model…":
    bb_name = c1.text_input("Hub model id or folder", key=keep("train_hub_id", ""), placeholder="google/t5-base-lm-adapt")
family = fam_of.get(bb_name) or ui.family_of(bb_name) or "decoder"
defaults = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["decoder"])
all_tasks = [t.name for t in list_tasks(root)]
tasks = c2.multiselect("Tasks", all_tasks, key=keep("train_tasks", [], options=all_tasks), placeholder="choose one or more tasks")

c1, c2, c3, c4 = st.columns(4)
seeds_text = c1.text_input("Origins (seeds)", key=keep("train_seeds", "0"), help="e.g. 0 1 2, 0-2 or 0,3")
kind = c2.selectbox("Origin kind", ["vocab", "normal", "uniform"], key=keep("train_kind", "vocab"),
                    help="vocab: embeddings of tokens sampled from the first 5,000 ids (the paper)")
# keys carry the family: switching to a backbone of another family shows that family's defaults
length = int(c3.number_input("Prompt length L", min_value=1, max_value=512,
                             key=keep(f"train_len_{family}", defaults["length"])))
steps = int(c4.number_input("Steps", min_value=1, max_value=100_000, key=keep(f"train_steps_{family}", defaults["steps"])))

c1, c2, c3, c4 = st.columns(4)
data_mode = c1.radio("Training data", ["full", "k-shot"], horizontal=True, key=keep("train_data", "full"))
k = None
if data_mode == "k-shot":
    k = int(c1.number_input("k (examples)", min_value=1, key=keep("train_k", 16)))
lr = float(c2.number_input("Learning rate", min_value=1e-5, max_value=10.0, format="%g",
                           key=keep(f"train_lr_{family}", float(defaults["lr"]))))
batch = int(c3.number_input("Batch size", min_value=1, max_value=512, key=keep(f"train_batch_{family}",
                                                                              defaults["batch_size"])))
eval_limit = int(c4.number_input("Validation rows", min_value=8, step=8, key=keep("train_eval_limit", 200),
                                 help="rows scored at each validation during training (the best prompt is kept)"))
c1, c2 = st.columns([1, 3])
sources = ["auto", "bundled", "hub"]
source = c1.selectbox("Data source", sources, key=keep("train_source", "auto", options=sources),
                      help="auto: the bundled subset when the task ships one, else the hub; hub: the full sets (online)")
data_dir = c2.text_input("Full local copies (folder, optional)", key=keep("train_data_dir", ""),
                         placeholder="DIR holding DIR/<task>/train.jsonl|csv|parquet or a save_to_disk folder") or None
overwrite = st.checkbox("Retrain prompts the store already has", key=keep("train_overwrite", False))

try:
    seeds = ui.seeds_from_text(seeds_text)
except ValueError:
    seeds = []
    st.error("Origins: write seeds like `0 1 2`, `0-2` or `0,3`.")
n_items = len(tasks) * len(seeds)
st.caption(f"{n_items} prompt(s): {len(tasks)} task(s) × {len(seeds)} origin(s), {steps} steps each, into `{root}`. "
           "Jobs run one after another on this machine.")
if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=not (n_items and bb_name),
             key="train_start"):
    cfg = TrainConfig(steps=steps, lr=lr, batch_size=batch, k_shot=k, eval_limit=eval_limit,
                      eval_every=max(1, steps // 5))
    spec = TrainRequest(backbone=bb_name, tasks=tuple(tasks), seeds=tuple(seeds), store_root=root, config=cfg,
                        length=length, origin_kind=kind, force=overwrite, source=source, data_dir=data_dir,
                        metadata={"command": "app: Train page"})
    try:
        job_id = submit_training(queue, spec, ui.model_cache().get)
        st.session_state["my_jobs"] = [*st.session_state["my_jobs"], job_id]
        st.toast(f"Job {job_id} queued: {spec.label()}", icon=":material/schedule:")
    except Exception as exc:  # noqa: BLE001
        ui.error_box(exc, "cannot start")

# ---------------------------------------------------------------------------------------- probe
with st.expander("Before tuning: can the frozen backbone separate these tasks? (linear probe)"):
    st.caption("A logistic regression on the frozen, prompt-free features of training rows, scored on validation "
               "rows. *readout*: the formatted input where the backbone reads its answer (what a prompt acts on); "
               "*pair*: two text fields encoded apart; *cosine*: only the cosine of those two encodings. Near the "
               "majority rate, a short prompt has little to work with (docs/REPRODUCTION.md, section 7).")
    c1, c2 = st.columns(2)
    probe_train = int(c1.number_input("Training rows", min_value=10, max_value=5000, key=keep("probe_train", 500)))
    probe_eval = int(c2.number_input("Validation rows", min_value=10, max_value=5000, key=keep("probe_eval", 200)))
    if st.button("Probe", key="probe_run", icon=":material/query_stats:", disabled=not (tasks and bb_name)):

        def probe_all():
            specs = [get_task(name, root) for name in tasks]
            found = probe_tasks(ui.backbone(bb_name), specs, train_limit=probe_train, eval_limit=probe_eval)
            return [r.as_dict() for r in found]

        with st.spinner(f"Probing {len(tasks)} task(s) on {bb_name}…"):
            found = ui.run_with(probe_all, "probe failed")
        if found is not None:
            st.session_state["probe_rows"] = found
    if st.session_state.get("probe_rows"):
        st.dataframe(st.session_state["probe_rows"], hide_index=True, key="probe_table")

# ---------------------------------------------------------------------------------------- jobs
st.subheader("Jobs")
ICON = {QUEUED: ":material/schedule:", RUNNING: ":material/sync:", DONE: ":material/check_circle:",
        FAILED: ":material/error:", CANCELLED: ":material/cancel:"}


def _job_text(j) -> str:
    bits = [f"**{j.label}**"]
    if j.state == RUNNING and j.kind != "train":  # e.g. a few-shot experiment: runs done and its last message
        bits += [f"{j.item}/{j.items} runs", j.message]
    elif j.state == RUNNING:
        if j.current:
            bits.append(f"item {min(j.item + 1, j.items)}/{j.items} `{j.current}`")
        if j.steps:
            bits.append(f"step {j.step}/{j.steps}")
        if j.loss is not None:
            bits.append(f"loss {j.loss:.3f}")
        if j.val_score is not None:
            bits.append(f"val {j.val_score:.3f}")
        if j.best_score is not None:
            bits.append(f"best {j.best_score:.3f}")
        left = j.eta_total_s
        bits.append(f"{ui.fmt_s(left)} left" if left is not None else j.message)
    elif j.state == QUEUED:
        bits.append("waiting for the job before it")
    else:
        bits.append(f"{j.state} after {ui.fmt_s(j.elapsed_s)}")
        if j.saved:
            bits.append(f"{len(j.saved)} saved")
        if j.skipped:
            bits.append(f"{len(j.skipped)} already stored")
    return " · ".join(b for b in bits if b)


def curves(j, live: bool) -> None:
    """The job's training loss and validation score per step: the running item live (redrawn by the
    fragment every second), finished items in an expander."""
    from tpv_core import plots

    items = list(dict.fromkeys(p[0] for p in j.history))
    metric = "validation score"
    if live:
        cur = items[-1]
        pts = [p[1:] for p in j.history if p[0] == cur]
        st.plotly_chart(plots.training_curve(pts, title=f"{cur}: step {pts[-1][0]}/{j.steps}", metric=metric),
                        width="stretch", key=f"curve_{j.id}_live", config={"displayModeBar": False})
        items = items[:-1]
    if items:
        with st.expander(f"curves of {len(items)} finished prompt(s)"):
            for n, item in enumerate(items):
                pts = [p[1:] for p in j.history if p[0] == item]
                st.plotly_chart(plots.training_curve(pts, title=item, metric=metric), width="stretch",
                                key=f"curve_{j.id}_{n}", config={"displayModeBar": False})


@st.fragment(run_every=1 if queue.active() else None)
def jobs_panel() -> None:
    mine = set(st.session_state.get("my_jobs", []))
    jobs = [j for j in queue.list() if j.kind == "train" or j.id in mine]
    if not jobs:
        st.caption("No jobs yet.")
        return
    for j in reversed(jobs):
        with st.container(border=True):
            c1, c2 = st.columns([6, 1], vertical_alignment="center")
            c1.markdown(f"{ICON.get(j.state, '')} " + _job_text(j) + ("" if j.id in mine else " · *another session*"))
            if j.state in (QUEUED, RUNNING):
                if j.state == RUNNING and j.phase:  # set-up before the first step: its own bar
                    c1.progress(j.phase_fraction, text=f"set-up: {j.phase}…")
                c1.progress(j.fraction, text=f"overall {j.fraction:.0%}")
                if j.id in mine and c2.button("Cancel", key=f"cancel_{j.id}", icon=":material/stop:"):
                    queue.cancel(j.id)
                    st.rerun(scope="fragment")
            if j.kind == "train" and j.history:
                curves(j, live=j.state == RUNNING)
            if j.state == FAILED:
                c1.error(j.error or "failed")
                if j.message:
                    with c1.expander("details"):
                        st.code(j.message)
    # a job of ours just finished: refresh the whole page (and stop polling when nothing is left)
    finished_now = {j.id for j in jobs if j.finished and j.id in mine}
    seen = st.session_state.setdefault("jobs_seen_finished", set(finished_now))
    if finished_now - seen:
        seen |= finished_now
        st.rerun(scope="app")
    if not queue.active() and st.session_state.get("_jobs_polling"):
        st.session_state["_jobs_polling"] = False
        st.rerun(scope="app")
    st.session_state["_jobs_polling"] = bool(queue.active())


jobs_panel()
if any(j.finished for j in queue.list()):
    if st.button("Clear finished jobs", key="train_clear"):
        queue.clear_finished()
        st.rerun()
