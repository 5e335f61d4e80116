"""Streamlit glue shared by the pages: session defaults, process-wide caches, export buttons.

Process-wide (``st.cache_resource``, shared by every browser session, read-only after creation):
the model cache, the job queue, the UMAP warm-up, tokenized validation splits, loaded prompts.
Per session (``st.session_state``): the store root, selections, slider weights, results.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st

from pages import _state
from pages._state import keep, snapshot
from tpv_core.app import appstate
from tpv_core.app.appstate import ModelCache
from tpv_core.app.jobs import JobQueue
from tpv_core.app.warmup import Warmup
from tpv_core.store import PromptStore, load_prompt

APP_DIR = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------
# session
# --------------------------------------------------------------------------------------------------
def init_session() -> None:
    ss = st.session_state
    if "results_dir" not in ss:
        ss["results_dir"] = appstate.default_results_dir(APP_DIR)
    ss.setdefault("my_jobs", [])


def _leave_v1_pages_mode() -> None:
    """Streamlit treats an app with a ``pages/`` folder as an old-style (v1) multipage app until a run calls
    ``st.navigation``. When the first visitor of a fresh server opens e.g. ``/train``, that page file runs
    directly, app.py never does, and the whole server stays in v1 mode (every file of pages/ listed, no
    titles, icons or wide layout). Switch v1 mode off and rerun: app.py then runs, and its
    ``st.navigation`` keeps the requested page (same URL path). Rerun at most once per session:
    AppTest switches the flag back on before every run (and runs page files directly), and a rerun there
    would swallow the button click of that run."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the v1 mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if not st.session_state.get("_left_v1_mode"):
            st.session_state["_left_v1_mode"] = True
            st.rerun()


def page_setup(title: str | None = None) -> None:
    """First call of every page: remembered choices restored, session defaults, the run's start time, the
    shared sidebar (store root, kept in session state and in the URL), then the page title with the store it
    reads and writes."""
    _leave_v1_pages_mode()
    st.session_state["_run_started"] = time.perf_counter()  # Combine reports its first-estimate latency from here
    snapshot()  # the widgets' latest values, before Streamlit forgets those of the page just left
    init_session()
    umap_warmup()
    default_root = appstate.default_store_root()
    with st.sidebar:
        st.text_input("Store root", key=keep(_state.STORE_KEY, lambda: _state.initial_store_root(default_root)),
                      help="folder of stored prompts: <root>/<backbone>/<task>/<origin>.safetensors; kept across "
                           "pages and in the URL (?store=...)")
        _state.sync_store_url(store_root(), default_root)
        if not Path(store_root()).is_dir():
            st.caption("This folder does not exist yet; training or importing creates it.")
        active = job_queue().active()
        if active:
            running = sum(j.state == "running" for j in active)
            st.caption(f":material/pending: {running} job running, {len(active) - running} queued (see Train)")
        device_setting()
        loaded = model_cache().loaded()
        if loaded:
            st.caption("Models loaded: " + ", ".join(loaded))
    if title:
        st.title(title)
        st.caption(f":material/folder_open: Store: `{store_root()}`")


def device_setting() -> None:
    """Where the app's models run (process-wide: every session shares the models). Shown only where there is
    a choice (a GPU); switching evicts the models held on the old device and frees their memory."""
    options = appstate.device_options()
    if len(options) <= 2:  # auto and cpu only: no GPU, nothing to choose
        return
    cache = model_cache()
    current = cache.device if cache.device in options else "auto"
    choice = st.selectbox("Device", options, index=options.index(current), key="app_device",
                          help="where models load and run; one model stays resident per GPU unless memory "
                               "allows more")
    if choice != cache.device:
        gone = cache.set_device(choice)
        if gone:
            st.caption("Freed: " + ", ".join(gone))


def store_root() -> str:
    return str(st.session_state.get("store_root") or appstate.default_store_root())


def root_key(name: str) -> str:
    """A widget key tied to the current store root: choices whose options come from the store start from
    their defaults again when the user points the app at another store."""
    return f"{name}_{hashlib.sha1(store_root().encode()).hexdigest()[:8]}"


def store() -> PromptStore:
    return PromptStore(store_root())


# --------------------------------------------------------------------------------------------------
# process-wide resources
# --------------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def model_cache() -> ModelCache:
    return ModelCache()


@st.cache_resource(show_spinner=False)
def job_queue() -> JobQueue:
    return JobQueue()


WARMUP_DELAY_S = 20.0  # the warm-up waits this long (or until the Projection page asks) before importing UMAP


@st.cache_resource(show_spinner=False)
def _umap_go() -> threading.Event:
    return threading.Event()


@st.cache_resource(show_spinner=False)
def umap_warmup() -> Warmup | None:
    """Start UMAP's JIT warm-up once per process, in the background (None when switched off). It waits
    ``WARMUP_DELAY_S`` seconds first, or until the Projection page calls :func:`umap_now`, so that importing
    torch, numba and UMAP does not compete with the app's first page (launch to the first Library table)."""
    if os.environ.get("TPV_NO_WARMUP"):
        return None
    go = _umap_go()

    def warm() -> None:
        go.wait(WARMUP_DELAY_S)
        from tpv_core import projection

        projection.warm_umap()

    return Warmup(warm, name="umap-warmup").start()


def umap_now() -> None:
    """The Projection page needs UMAP: end the warm-up's start delay."""
    _umap_go().set()


def backbone(name: str):
    """The shared, read-only backbone ``name`` (loaded once per process, with a visible spinner)."""
    cache = model_cache()
    if cache.is_loaded(name):
        return cache.get(name)
    box = st.empty()
    with st.spinner(f"Loading {name} (once per app process)…"):
        model = cache.get(name, notify=lambda msg: box.caption(f"{name}: {msg}"))
    box.empty()
    return model


def providers() -> list[Any]:
    from tpv_core.backbones import list_providers

    return list(list_providers())


def family_of(name: str) -> str | None:
    for p in providers():
        if p.name == name:
            return p.family
    cache = model_cache()
    if cache.is_loaded(name):
        return cache.get(name).family
    return None


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def _index(root: str, signature: tuple) -> tuple[pd.DataFrame, list[str]]:
    errors: list[str] = []
    df = PromptStore(root).index(errors=errors)
    return df, errors


def store_or_stop() -> tuple[str, pd.DataFrame]:
    """The store root and its index; a note and ``st.stop()`` when it holds no prompts."""
    root = store_root()
    df, _ = store_index(root)
    if df.empty:
        st.info(f"No prompts in `{root}`: train or import some first.", icon=":material/info:")
        st.stop()
    return root, df


def common_length(df: pd.DataFrame) -> int:
    """The most common prompt length of index rows (the smallest on a tie): a zoo's demo prompts before a few
    paper-recipe ones."""
    return int(df["length"].mode().iloc[0])


def selection_filters(df: pd.DataFrame, prefix: str, backbone_label: str = "Backbones") -> tuple[list, list, list]:
    """Backbone, task and origin pickers over the store index (all chosen by default; stored combinations
    (``source == "combination"``) offered but not preselected), remembered per store root under ``{prefix}_bbs`` etc.
    Where the store holds prompts of several lengths (the demo prompts beside paper-recipe ones), a length picker
    comes first (the most common length by default) and the origins offered are those of the lengths chosen."""
    lengths = sorted(int(x) for x in df["length"].unique())
    per_length = ""  # the origins picker remembers its choice per set of lengths
    if len(lengths) > 1:
        chosen_lengths = st.multiselect(
            "Prompt lengths (L)", lengths,
            key=keep(root_key(f"{prefix}_lengths"), [common_length(df)], options=lengths),
            help="an origin is a seed and a length: prompts of different lengths come from different origins and "
                 "compare only by the token-mean cosine")
        df = df[df["length"].isin(chosen_lengths)]
        per_length = "_L" + "-".join(map(str, sorted(chosen_lengths)))
    c1, c2, c3 = st.columns(3)
    backbones = sorted(df["backbone"].unique())
    bbs = c1.multiselect(backbone_label, backbones, key=keep(root_key(f"{prefix}_bbs"), backbones, options=backbones))
    all_tasks = sorted(df["task"].unique())
    real_tasks = sorted(df.loc[df["source"] != "combination", "task"].unique())
    tasks = c2.multiselect("Tasks", all_tasks, key=keep(root_key(f"{prefix}_tasks"), real_tasks, options=all_tasks))
    origins = sorted(df["origin"].unique())
    chosen = c3.multiselect("Origins", origins, key=keep(root_key(f"{prefix}_origins{per_length}"), origins,
                                                         options=origins))
    return bbs, tasks, chosen


def store_index(root: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The store's index (header scan), cached until a file is added, changed or removed."""
    root = root or store_root()
    return _index(root, PromptStore(root).signature())


@st.cache_resource(show_spinner=False, max_entries=4096)
def _prompt(path: str, mtime_ns: int, size: int):
    return load_prompt(path)


def prompt_at(path: str):
    """A stored prompt, loaded once per file version (shared read-only: never mutate it)."""
    s = os.stat(path)
    return _prompt(str(path), s.st_mtime_ns, s.st_size)


# --------------------------------------------------------------------------------------------------
# evaluation caches
# --------------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=256)
def prepared_split(bb_name: str, task_name: str, split: str, limit: int | None, root: str):
    """A task split tokenized for a backbone, once per process (the backbone must be loaded)."""
    from tpv_core.evaluation import prepare_split
    from tpv_core.tasks import get_task

    bb = model_cache().get(bb_name)
    return prepare_split(bb, get_task(task_name, root), split, limit=limit)


@st.cache_resource(show_spinner=False)
def score_cache():
    """Scores of stored prompts, kept on disk across app restarts (``$TPV_CACHE_DIR/scores.json``)."""
    from tpv_core.evaluation import ScoreCache

    return ScoreCache()


def cached_prompt_score(bb_name: str, path: str, task_name: str, split: str, limit: int | None) -> dict | None:
    """A stored prompt's score if it was computed before (this process or an earlier one), else None."""
    try:
        return score_cache().get(score_cache().key(backbone=bb_name, prompt_path=path, task=task_name, split=split,
                                                   limit=limit))
    except OSError:
        return None


@st.cache_data(show_spinner=False, max_entries=2048)
def prompt_score(bb_name: str, path: str, mtime_ns: int, task_name: str, split: str, limit: int | None,
                 root: str) -> dict[str, float]:
    """Metrics of a stored prompt on a split (cached per file version, on disk too); a prompt scored on its
    own task must have been tuned under the readout the backbone uses for it (`check_readout`)."""
    from tpv_core.evaluation import evaluate
    from tpv_core.training import check_readout

    got = cached_prompt_score(bb_name, path, task_name, split, limit)
    if got is not None:
        return got
    bb = model_cache().get(bb_name)
    prep = prepared_split(bb_name, task_name, split, limit, root)
    prompt = prompt_at(path)
    if prompt.task == task_name:
        check_readout(prompt, bb, prep.task)
    res = evaluate(bb, prep.task, prompt.tensor, prep, batch_size=16)
    out = {"main": res.main, "n": res.n, **res.metrics}
    try:
        cache = score_cache()
        cache.put(cache.key(backbone=bb_name, prompt_path=path, task=task_name, split=split, limit=limit), out)
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------------
MIME = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html", "csv": "text/csv", "zip": "application/zip"}


def _fig_key(fig) -> str:
    return hashlib.sha1(fig.to_json().encode()).hexdigest()[:16]


def export_buttons(fig, table: pd.DataFrame | None, stem: str, key: str) -> None:
    """Download buttons: HTML and CSV at once; PNG and SVG rendered on request (they need Chromium,
    through kaleido) with a clear message when it is missing."""
    from tpv_core import plots

    cols = st.columns([1, 1, 1.3, 3])
    # HTML inlines plotly.js (~5 MB, works offline): made on click, not on every rerun
    cols[0].download_button("HTML", data=lambda: plots.export_figure(fig, "html"), file_name=f"{stem}.html",
                            mime=MIME["html"], key=f"{key}_html", on_click="ignore", icon=":material/download:")
    if table is not None:
        cols[1].download_button("CSV", data=plots.export_table(table), file_name=f"{stem}.csv", mime=MIME["csv"],
                                key=f"{key}_csv", on_click="ignore", icon=":material/download:")
    if not plots.static_export_available():
        cols[3].warning(f"PNG/SVG: {plots.NO_BROWSER_MSG}", icon=":material/warning:")
        return
    state = st.session_state.setdefault("_static_exports", {})
    fkey = f"{key}:{_fig_key(fig)}"
    if fkey not in state:
        if cols[2].button("PNG / SVG…", key=f"{key}_render", help="render static images with Chromium (~2 s)"):
            try:
                with st.spinner("Rendering PNG and SVG…"):
                    state.clear()  # keep only the latest figure's images in this session
                    state[fkey] = plots.render_static([fig], ["png", "svg"])[0]
            except plots.ExportUnavailableError as exc:
                state[fkey] = {"error": str(exc)}
    if fkey in state:
        got = state[fkey]
        if "error" in got:
            cols[3].warning(f"PNG/SVG export failed: {got['error']}", icon=":material/warning:")
        else:
            sub = cols[2].columns(2)
            sub[0].download_button("PNG", data=got["png"], file_name=f"{stem}.png", mime=MIME["png"],
                                   key=f"{key}_png", on_click="ignore")
            sub[1].download_button("SVG", data=got["svg"], file_name=f"{stem}.svg", mime=MIME["svg"],
                                   key=f"{key}_svg", on_click="ignore")


def error_box(exc: BaseException, what: str) -> None:
    st.error(f"{what}: {exc}", icon=":material/error:")


def seeds_from_text(text: str) -> list[int]:
    from tpv_core.cli.common import parse_seeds

    return sorted(dict.fromkeys(parse_seeds([text])))


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def selected_backbone(df: pd.DataFrame, key: str, label: str = "Backbone", container: Any = st) -> str | None:
    """A backbone picker over the backbones the store holds, remembered per page and session."""
    names = sorted(df["backbone"].unique()) if not df.empty else []
    if not names:
        return None
    default = "minilm-l6" if "minilm-l6" in names else names[0]  # the embedded offline default
    # one choice per page, remembered per page: a backbone picked on Combine does not follow to Train
    return container.selectbox(label, names, key=keep(key, default, options=names))


def run_with(fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - shown to the user
        error_box(exc, what)
        return None
