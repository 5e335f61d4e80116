"""The Streamlit app through ``streamlit.testing.v1.AppTest``: every page renders on a store of real
tiny MiniLM prompts; Combine sliders change the scores; a training job lands in the store; exports."""

import os

import io  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

TASKS = ("sentences_yelp", "sentences_imdb")

os.environ.setdefault("TPV_NO_WARMUP", "1")  # the Projection test computes UMAP directly

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from apptest_helpers import APP, ROOT, TIMEOUT, open_page  # noqa: E402,F401


@pytest.fixture(scope="session")
def app_store(tmp_path_factory, tiny_store):
    """A private copy of the session's tiny store: real MiniLM prompts, 2 tasks x 2 origins, a few steps each
    (tests here add and remove prompts; the shared one stays untouched)."""
    import shutil

    from tpv_core.store import PromptStore

    root = tmp_path_factory.mktemp("app_store") / "store"
    shutil.copytree(tiny_store.root, root)
    store = PromptStore(root)
    df = store.index()
    assert set(TASKS) <= set(df["task"]) and df["origin"].nunique() >= 2, df
    return store


@pytest.fixture(scope="session", autouse=True)
def shared_model(minilm):
    """Hand the session's MiniLM to the app's process-wide model cache (no second load)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages import _ui

    _ui.model_cache().put("minilm-l6", minilm)
    yield


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.exception] + [e.value for e in at.error]


@pytest.fixture
def downloads(monkeypatch):
    """Every download button's (file name -> bytes), captured where Streamlit marshals the data."""
    from streamlit.elements.widgets import button

    got: dict[str, bytes] = {}
    original = button.marshall_file

    def capture(coordinates, data, proto, mimetype, file_name=None, **kw):
        payload = data() if callable(data) else data
        got[file_name] = payload.encode() if isinstance(payload, str) else bytes(payload)
        return original(coordinates, data, proto, mimetype, file_name, **kw)

    monkeypatch.setattr(button, "marshall_file", capture)
    return got


def test_library_lists_exports_and_imports(app_store, downloads):
    at = open_page(app_store.root)
    assert not errors(at)
    table = at.dataframe[0].value
    assert len(table) == 4 and set(table["task"]) == set(TASKS)
    assert {"metric", "score"} <= set(table.columns) and not [c for c in table.columns if c.startswith("val_")]
    assert table["score"].notna().all() and (table["metric"] != "").all()
    assert any("Origin id" in c.value for c in at.caption)
    lib_task = next(m for m in at.multiselect if m.label == "Task")
    lib_task.set_value([TASKS[0]]).run()
    assert len(at.dataframe[0].value) == 2
    assert any(c.value.startswith("Shown: 2 of 4 prompts") and "1 task(s)" in c.value for c in at.caption)
    lib_task.set_value([]).run()
    zips = [name for name in downloads if name.endswith(".zip")]
    assert zips, downloads.keys()
    data = downloads[zips[0]]
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert any(n.endswith("adapter_config.json") for n in names)
    assert any(n.endswith("tpv_origin.safetensors") for n in names)

    # import the exported adapter back under a new task name (origin from the zip)
    at.file_uploader(key="lib_import_file").set_value(("adapter.zip", data, "application/zip")).run()
    at.text_input(key="lib_import_task").set_value("imported_task").run()
    at.button(key="lib_import_go").click().run()
    assert not errors(at)
    assert app_store.index(task="imported_task").shape[0] == 1
    app_store.delete("minilm-l6", "imported_task", app_store.index(task="imported_task")["origin"][0])


def test_combine_slider_changes_the_scores(app_store):
    at = open_page(app_store.root, "combine", cmb_limit=50)
    assert not errors(at)
    before = at.dataframe[0].value.set_index("task")["combined"]
    assert set(before.index) == set(TASKS) and before.notna().all()
    assert at.session_state["combine_first_estimate_s"] > 0
    keys = [s.key for s in at.slider if s.key and s.key.startswith("w_")]
    assert len(keys) == 2
    at.slider(key=keys[0]).set_value(-1.0).run()
    at.slider(key=keys[1]).set_value(2.0).run()
    assert not errors(at)
    after = at.dataframe[0].value.set_index("task")["combined"]
    assert not after.equals(before), (before, after)
    assert "first estimate" in " ".join(c.value for c in at.caption)
    # save the combination into the store
    at.button(key="cmb_save").click().run()
    assert not errors(at)
    name = next(t.value for t in at.text_input if t.label == "Task name in the store")
    # weights -1 and 2, each term with its origin, in the suggested name; the formula is shown literally
    assert name.startswith("sum_m1sentences_") and "_2sentences_" in name and ".s0" in name, name
    assert any("P0(vocab5000-s0-L4) − 1·sentences_" in c.value for c in at.code)  # literal, in a code block
    saved = app_store.index(task=name)
    assert len(saved) == 1 and saved["source"][0] == "combination"
    combo = app_store.load("minilm-l6", saved["task"][0], saved["origin"][0]).metadata["combination"]
    meta_weights = [v["weight"] for v in combo["vectors"]]
    assert meta_weights == [-1.0, 2.0]
    app_store.delete("minilm-l6", saved["task"][0], saved["origin"][0])


def test_training_job_lands_in_the_store(tmp_path, app_store):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(app_store.root, root)
    at = open_page(root, "train")
    assert not errors(at)
    at.selectbox(key="train_bb").set_value("minilm-l6").run()
    at.multiselect(key="train_tasks").set_value(["sentences_yelp"])
    at.text_input(key="train_seeds").set_value("7")
    at.number_input(key="train_len_encoder").set_value(4)
    at.number_input(key="train_steps_encoder").set_value(3)
    at.number_input(key="train_eval_limit").set_value(16)
    at.run()
    at.button(key="train_start").click().run()
    assert not errors(at)
    job_ids = at.session_state["my_jobs"]
    assert job_ids
    from pages import _ui

    final = _ui.job_queue().wait(job_ids[-1], timeout=120)
    assert final.state == "done", final.error
    at.run()
    assert not errors(at)
    from tpv_core.store import PromptStore

    assert PromptStore(root).exists("minilm-l6", "sentences_yelp", "vocab5000-s7-L4")
    assert any("done" in m.value for m in at.markdown)


def test_probe_on_the_train_page(app_store):
    at = open_page(app_store.root, "train")
    at.selectbox(key="train_bb").set_value("minilm-l6").run()
    at.multiselect(key="train_tasks").set_value(["sentences_yelp", "qnli"])
    at.number_input(key="probe_train").set_value(40)
    at.number_input(key="probe_eval").set_value(20).run()
    at.button(key="probe_run").click().run()
    assert not errors(at)
    rows = at.session_state["probe_rows"]
    assert [(r["task"], r["view"]) for r in rows] == [("sentences_yelp", "readout"), ("qnli", "readout"),
                                                      ("qnli", "pair"), ("qnli", "cosine")]
    assert all(r["train_rows"] == 40 and r["eval_rows"] == 20 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert len(at.dataframe) >= 1


def test_similarity_heatmap_and_exports(app_store, downloads):
    at = open_page(app_store.root, "similarity")
    assert not errors(at)
    assert at.get("plotly_chart")
    csv = next(v for k, v in downloads.items() if k.endswith(".csv"))
    html = next(v for k, v in downloads.items() if k.endswith(".html"))
    table = pd.read_csv(io.BytesIO(csv))
    assert len(table) > 0
    assert b"plotly" in html.lower() and html.lstrip().lower().startswith((b"<html", b"<!doctype", b"<div"))
    # the other views: per (task, origin), token-mean cosine, prompts instead of vectors, same-origin pairs only
    at.radio(key="sim_view").set_value("item").run()
    at.radio(key="sim_def").set_value("token-mean").run()
    at.radio(key="sim_what").set_value("prompt").run()
    assert not errors(at) and at.get("plotly_chart")
    at.radio(key="sim_view").set_value("task").run()
    at.selectbox(key="sim_same").set_value("only").run()
    assert not errors(at) and at.get("plotly_chart")


def test_a_store_with_two_prompt_lengths_offers_one_length_at_a_time(app_store, tmp_path, minilm):
    """The paper-recipe prompts beside the demo ones (same seeds, another L): the similarity page reads the
    most common length unless the user picks others, so a task's diagonal never mixes the two recipes."""
    import shutil

    from tpv_core.prompts import make_origin
    from tpv_core.store import PromptStore
    from tpv_core.tasks import get_task
    from tpv_core.training import TrainConfig, tune_prompt

    store = PromptStore(shutil.copytree(app_store.root, tmp_path / "store"))
    store.save(tune_prompt(minilm, get_task(TASKS[0]), make_origin(minilm, seed=0, length=6),
                           TrainConfig(steps=2, batch_size=4, eval_every=None)).prompt)
    at = open_page(store.root, "similarity")
    assert not errors(at)
    lengths = next(m for m in at.multiselect if m.label == "Prompt lengths (L)")
    origins = next(m for m in at.multiselect if m.label == "Origins")
    assert lengths.value == [4] and lengths.options == ["4", "6"]
    assert origins.value and all(o.endswith("-L4") for o in origins.value)
    assert at.get("plotly_chart")
    lengths.set_value([6]).run()
    origins = next(m for m in at.multiselect if m.label == "Origins")
    assert origins.value == ["vocab5000-s0-L6"]
    assert not errors(at) and any("at least two prompts" in i.value for i in at.info)
    next(m for m in at.multiselect if m.label == "Prompt lengths (L)").set_value([4, 6]).run()
    origins = next(m for m in at.multiselect if m.label == "Origins")
    assert len(origins.value) == 3 and not errors(at)
    combine = open_page(store.root, "combine")  # the origins of the common length are offered first
    origin = next(s for s in combine.selectbox if s.label == "Origin P0")
    assert origin.value == "vocab5000-s0-L4" and origin.options[-1] == "vocab5000-s0-L6" and not errors(combine)


def test_projection_renders(app_store):
    at = open_page(app_store.root, "projection")
    assert not errors(at)
    assert at.get("plotly_chart")
    at.radio(key="proj_method").set_value("pca").run()
    at.radio(key="proj_what").set_value("prompt").run()
    assert not errors(at) and at.get("plotly_chart")


def test_fewshot_results_render(app_store, tmp_path):
    runs = pd.DataFrame([
        {"target": "sentences_amazon", "k": k, "init": init, "seed": s,
         "score": 0.5 + 0.01 * k + 0.05 * (init == "tpv") + 0.01 * s}
        for k in (0, 5, 10) for init in ("random", "tpv") for s in (0, 1)
    ])
    runs.to_csv(tmp_path / "fewshot_runs.csv", index=False)
    at = open_page(app_store.root, "fewshot", fs_dir=str(tmp_path), fs_source="results folder")
    assert not errors(at)
    assert at.get("plotly_chart")
    summary = at.dataframe[0].value
    assert {"k", "init", "mean", "ci_low", "ci_high"} <= set(summary.columns) and len(summary) == 6
    tests = at.dataframe[1].value  # the paired comparisons: tpv - random within each (origin, data seed) cell
    assert list(tests["k"]) == [0, 5, 10] and set(tests["b"]) == {"random"}
    assert tests["mean_diff"].round(9).tolist() == [0.05, 0.05, 0.05] and (tests["a_wins"] == 2).all()
    # the Run tab plans paired cells: 2 data seeds per origin double every k > 0
    at.number_input(key="fs_data_seeds").set_value(2).run()
    assert not errors(at)
    assert any("× 2 data seeds" in c.value for c in at.caption)


def test_sessions_do_not_share_weights(app_store):
    a = open_page(app_store.root, "combine", cmb_limit=50)
    b = open_page(app_store.root, "combine", cmb_limit=50)
    a.slider(key=[s.key for s in a.slider if s.key.startswith("w_")][0]).set_value(0.5).run()
    b.run()
    key = [s.key for s in b.slider if s.key.startswith("w_")][0]
    assert a.slider(key=key).value == 0.5 and b.slider(key=key).value == 1.0


def test_static_export_renders_png_and_svg_or_says_why(app_store, downloads, monkeypatch):
    from tpv_core import plots

    if plots.static_export_available():
        at = open_page(app_store.root, "similarity")
        at.button(key="sim_export_render").click().run()
        assert not errors(at)
        png = next((v for k, v in downloads.items() if k.endswith(".png")), None)
        svg = next((v for k, v in downloads.items() if k.endswith(".svg")), None)
        if png is None:  # the browser failed: the page must say so instead
            assert any("PNG/SVG export failed" in w.value for w in at.warning)
        else:
            assert png.startswith(b"\x89PNG") and b"<svg" in svg[:2000]
    monkeypatch.setattr(plots, "find_browser", lambda: None)
    at = open_page(app_store.root, "similarity")
    assert not errors(at)
    assert any("needs Chromium" in w.value for w in at.warning)


@pytest.fixture
def two_backbone_store(tmp_path):
    """Synthetic prompts (no model needed) for two backbones of different widths: 3 tasks x 2 origins each,
    tau = a task direction + noise, so both backbones arrange the tasks alike."""
    import torch

    from tpv_core.prompts import Origin, SoftPrompt
    from tpv_core.store import PromptStore

    store = PromptStore(tmp_path / "store")
    gen = torch.Generator().manual_seed(0)
    for backbone, dim in (("bb-small", 16), ("bb-large", 24)):
        a = torch.randn(4, dim, generator=gen)
        # the same task geometry on both backbones: cos(alpha, beta) > 0 > cos(beta, gamma) > cos(alpha, gamma)
        directions = {"alpha": a, "beta": 0.6 * a + torch.randn(4, dim, generator=gen),
                      "gamma": -a + 0.2 * torch.randn(4, dim, generator=gen)}
        for seed in (0, 1):
            origin = Origin(backbone, "normal", seed, 4, dim, tensor=torch.randn(4, dim, generator=gen))
            for task, d in directions.items():
                p = origin.tensor + d + 0.1 * torch.randn(4, dim, generator=gen)
                store.save(SoftPrompt(p, origin, task, backbone, {"metrics": {"val_accuracy": 0.5}}))
    return store


def test_projection_facets_backbones_and_reports_geometry(two_backbone_store):
    at = open_page(two_backbone_store.root, "projection")
    assert not errors(at)
    assert at.get("plotly_chart")
    geo = at.dataframe[0].value
    assert {"r (Spearman)", "p (Mantel)", "shared tasks"} <= set(geo.columns)
    assert geo["shared tasks"].iloc[0] == 3 and geo["r (Spearman)"].iloc[0] > 0.9
    at = open_page(two_backbone_store.root, "similarity")
    assert not errors(at) and at.get("plotly_chart")


def test_switching_the_store_root_resets_store_choices(app_store, two_backbone_store):
    at = open_page(app_store.root, "similarity")
    assert set(at.multiselect[0].value) == {"minilm-l6"}
    at.text_input(key="store_root").set_value(str(two_backbone_store.root)).run()
    assert not errors(at)
    assert set(at.multiselect[0].value) == {"bb-small", "bb-large"}  # defaults of the new store, not stale ones
    assert at.get("plotly_chart")


def test_bundled_fewshot_results_show_at_once(app_store):
    at = open_page(app_store.root, "fewshot")
    assert not errors(at)
    assert at.radio(key="fs_source").value.startswith("bundled")
    chart = at.get("plotly_chart")[0]
    import json

    spec = json.loads(chart.proto.spec)
    assert "Few-shot" in spec["layout"]["title"]["text"] and spec["layout"]["yaxis"]["title"]["text"]


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_store_root_and_choices_survive_page_switches(tmp_path, app_store):
    """Set the store root to a temporary folder, visit every page and come back: the root, and each page's
    choices, are still there; a job started after the walk writes only into that store; the bundled zoo
    is unchanged."""
    import shutil

    zoo = ROOT / "data" / "zoo"
    zoo_before = _hashes(zoo) if zoo.is_dir() else {}
    root = tmp_path / "mystore"
    shutil.copytree(app_store.root, root)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="store_root").set_value(str(root)).run()
    assert not errors(at)
    # choices on three pages
    at.switch_page("pages/combine.py").run()
    at.selectbox(key="cmb_limit").set_value(50).run()
    wkey = [s.key for s in at.slider if s.key.startswith("w_")][0]
    at.slider(key=wkey).set_value(0.55).run()
    assert at.session_state["combine_first_estimate_s"] > 0 and not errors(at)
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="train_bb").value == "minilm-l6"  # Train's own backbone choice
    at.multiselect(key="train_tasks").set_value(["sentences_yelp"]).run()
    at.text_input(key="train_seeds").set_value("5")
    at.number_input(key="train_len_encoder").set_value(4)
    at.number_input(key="train_steps_encoder").set_value(4)
    at.number_input(key="train_eval_limit").set_value(16).run()
    at.switch_page("pages/similarity.py").run()
    at.radio(key="sim_def").set_value("token-mean").run()
    for page in ("library", "projection", "fewshot", "similarity", "combine", "train", "library"):
        at.switch_page(f"pages/{page}.py").run()
        assert not errors(at), page
        assert at.text_input(key="store_root").value == str(root), page
        assert any(str(root) in c.value for c in at.caption), page  # every header names the store
    at.switch_page("pages/combine.py").run()
    assert at.selectbox(key="cmb_limit").value == 50 and at.slider(key=wkey).value == 0.55
    at.switch_page("pages/similarity.py").run()
    assert at.radio(key="sim_def").value == "token-mean"
    at.switch_page("pages/train.py").run()
    assert at.multiselect(key="train_tasks").value == ["sentences_yelp"]
    assert at.text_input(key="train_seeds").value == "5" and at.number_input(key="train_steps_encoder").value == 4
    assert any(f"into `{root}`" in c.value for c in at.caption)
    at.button(key="train_start").click().run()
    assert not errors(at)
    from pages import _ui

    job = _ui.job_queue().wait(at.session_state["my_jobs"][-1], timeout=120)
    assert job.state == "done", job.error
    assert job.saved and all(str(root) in p for p in job.saved)
    assert len(job.history) == 4 and [h[1] for h in job.history] == [1, 2, 3, 4]  # the live curve's points
    from tpv_core.store import PromptStore

    assert PromptStore(root).exists("minilm-l6", "sentences_yelp", "vocab5000-s5-L4")
    assert (_hashes(zoo) if zoo.is_dir() else {}) == zoo_before
    at.run()
    assert not errors(at) and at.get("plotly_chart")  # the finished job's curve


def test_store_root_from_the_url(tmp_path, app_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["store"] = str(app_store.root)
    at.run()
    assert at.text_input(key="store_root").value == str(app_store.root)
    assert len(at.dataframe[0].value) >= 4


def test_backbone_choice_does_not_leak_between_pages(two_backbone_store):
    at = open_page(two_backbone_store.root, "combine")
    at.selectbox(key="cmb_bb").set_value("bb-small").run()
    at.switch_page("pages/fewshot.py").run()
    assert at.selectbox(key="fs_bb").value == "bb-large"  # the page's own default (first stored), not Combine's
    at.switch_page("pages/combine.py").run()
    assert at.selectbox(key="cmb_bb").value == "bb-small"
