"""The workflow layer: each store workflow driven through two front-ends (the `tpv` command and the app's job
queue or page) lands the same thing in the store."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tpv_core.app.job_bodies import submit_training  # noqa: E402
from tpv_core.app.jobs import DONE, JobQueue  # noqa: E402
from tpv_core.cli import main  # noqa: E402
from tpv_core.store import PromptStore  # noqa: E402
from tpv_core.training import TrainConfig  # noqa: E402
from tpv_core.workflows.combination import (  # noqa: E402
    combine_prompts,
    default_name,
    formula,
    is_combination,
    read_combination,
    VectorTerm,
)
from tpv_core.workflows.fewshot import FewshotRequest  # noqa: E402
from tpv_core.workflows.train import TrainRequest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("sentences_yelp", "sentences_imdb")
VOLATILE = {"created", "wall_time_s", "command", "source", "meta_checksum"}  # meta_checksum covers created etc.


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.shutdown()


def _stable(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in VOLATILE}


def test_train_cli_and_job_store_the_same_prompts_with_one_retrain_rule(minilm, tmp_path, queue, capsys):
    cli_root, job_root = tmp_path / "cli", tmp_path / "job"
    args = ["--steps", "3", "--length", "4", "--eval-limit", "8", "--eval-every", "3", "--batch-size", "8"]
    assert main(["train", "--backbone", "minilm-l6", "--store", str(cli_root), "--task", "sentences_yelp",
                 "--origin", "0-1", *args]) == 0
    cfg = TrainConfig(steps=3, batch_size=8, eval_every=3, eval_limit=8)
    req = TrainRequest("minilm-l6", ("sentences_yelp",), (0, 1), str(job_root), cfg, length=4)
    st = queue.wait(submit_training(queue, req, lambda _n: minilm), timeout=300)
    assert st.state == DONE, st.error
    cli, job = PromptStore(cli_root), PromptStore(job_root)
    assert list(cli.index()["origin"]) == list(job.index()["origin"]) == ["vocab5000-s0-L4", "vocab5000-s1-L4"]
    for origin in ("vocab5000-s0-L4", "vocab5000-s1-L4"):
        a, b = cli.load("minilm-l6", "sentences_yelp", origin), job.load("minilm-l6", "sentences_yelp", origin)
        assert torch.equal(a.tensor, b.tensor)  # same seed, same config: the same prompt
        assert _stable(a.metadata) == _stable(b.metadata)

    # the retrain rule, in both front-ends: a prompt tuned under another readout is retrained, not skipped
    for store in (cli, job):
        p = store.load("minilm-l6", "sentences_yelp", "vocab5000-s0-L4")
        p.metadata["readout"] = {"sentences_yelp": "similarity"}  # pretend it was tuned for another readout
        store.save(p, overwrite=True)
    capsys.readouterr()
    assert main(["train", "--backbone", "minilm-l6", "--store", str(cli_root), "--task", "sentences_yelp",
                 "--origin", "0-1", *args]) == 0
    err = capsys.readouterr().err
    assert "retrain sentences_yelp/vocab5000-s0-L4" in err and "skip sentences_yelp/vocab5000-s1-L4" in err
    st = queue.wait(submit_training(queue, req, lambda _n: minilm), timeout=300)
    assert st.state == DONE and len(st.saved) == 1 and st.skipped == ("sentences_yelp / vocab5000-s1-L4",)
    for store in (cli, job):
        assert store.load("minilm-l6", "sentences_yelp", "vocab5000-s0-L4").metadata["readout"] == {
            "sentences_yelp": "descriptions"}


def _page_save(store_root, weights):
    """Save a combination through the app's Combine page (AppTest)."""
    from apptest_helpers import open_page

    at = open_page(store_root, "combine", cmb_limit=50)
    keys = [s.key for s in at.slider if s.key and s.key.startswith("w_")]
    for key, w in zip(keys, weights):
        at.slider(key=key).set_value(w).run()
    at.button(key="cmb_save").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return next(t.value for t in at.text_input if t.label == "Task name in the store")


def test_combination_saved_by_cli_and_page_share_one_schema(minilm, tiny_store, tmp_path, capsys):
    import shutil

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages import _ui

    _ui.model_cache().put("minilm-l6", minilm)
    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root)
    store = PromptStore(root)
    page_name = _page_save(root, [0.5, -0.25])
    # the page lists the vectors in store order (imdb, yelp) and gives the sliders' weights in that order
    assert main(["combine", "--backbone", "minilm-l6", "--store", str(root), "--vector", "sentences_imdb:0",
                 "sentences_yelp:0", "--weights", "0.5", "-0.25", "--limit", "50", "--save-as", "from_cli"]) == 0
    df = store.index()
    combos = df[df["source"] == "combination"]
    assert sorted(combos["task"]) == sorted([page_name, "from_cli"])
    page = store.load("minilm-l6", page_name, "vocab5000-s0-L4")
    cli = store.load("minilm-l6", "from_cli", "vocab5000-s0-L4")
    assert torch.allclose(page.tensor, cli.tensor)
    a, b = page.metadata["combination"], cli.metadata["combination"]
    assert set(a) == set(b) == {"method", "origin", "lambda", "label", "vectors", "terms", "scores"}
    assert a["vectors"] == b["vectors"] == [
        {"task": "sentences_imdb", "origin": "vocab5000-s0-L4", "weight": 0.5},
        {"task": "sentences_yelp", "origin": "vocab5000-s0-L4", "weight": -0.25}]
    assert a["label"] == b["label"] and a["lambda"] == b["lambda"] == 1.0
    assert set(a["scores"]["validation"]) == set(b["scores"]["validation"]) == set(TASKS)
    assert set(page.metrics) == set(cli.metrics) == {f"val_{t}" for t in TASKS}
    # a second save under the same name is refused unless replaced explicitly
    code = main(["combine", "--backbone", "minilm-l6", "--store", str(root), "--vector", "sentences_yelp:0",
                 "--limit", "8", "--save-as", "from_cli"])
    assert code == 2 and "exists" in capsys.readouterr().err


def test_combinations_of_older_layouts_still_read(tiny_store, tmp_path):
    from tpv_core.prompts import SoftPrompt

    store = PromptStore(tmp_path / "s")
    base = tiny_store.load_all(task="sentences_yelp")[0]
    page_meta = {"source": "combination", "steps": 0, "metrics": {"val_sentences_yelp": 0.7},
                 "combination": {"method": "sum", "terms": [["sentences_yelp", 0.5]], "origin": base.origin.id,
                                 "vectors": [{"task": "sentences_yelp", "origin": base.origin.id, "weight": 0.5}],
                                 "label": "0.5sentences_yelp"}}
    cli_meta = {"source": "combination", "metrics": {"validation_sentences_yelp": 0.6},
                "combination": {"method": "ties", "terms": [["sentences_yelp", 2.0]], "lambda": 0.4, "label": "x"}}
    store.save(SoftPrompt(base.tensor, base.origin, "combo:0.5sentences_yelp", base.backbone, page_meta))
    store.save(SoftPrompt(base.tensor, base.origin, "old_cli", base.backbone, cli_meta))
    df = store.index()
    assert list(df["source"]) == ["combination", "combination"]
    old_page = read_combination(store.load(base.backbone, "combo:0.5sentences_yelp", base.origin.id))
    old_cli = read_combination(store.load(base.backbone, "old_cli", base.origin.id))
    assert old_page["vectors"][0]["weight"] == 0.5 and old_page["scores"] == {"validation": {"sentences_yelp": 0.7}}
    assert old_cli["method"] == "ties" and old_cli["lambda"] == 0.4
    assert old_cli["vectors"] == [{"task": "sentences_yelp", "origin": base.origin.id, "weight": 2.0}]
    assert old_cli["scores"] == {"validation": {"sentences_yelp": 0.6}}
    assert not is_combination(base.metadata) and read_combination(base) is None


def test_combination_names_and_formula_keep_every_term():
    terms = [VectorTerm("sst2", "vocab5000-s0-L20", 0.55), VectorTerm("sst2", "vocab5000-s1-L20", 1.0),
             VectorTerm("yelp_polarity", "vocab5000-s0-L20", -0.2)]
    assert formula(terms, "vocab5000-s0-L20") == "P0(vocab5000-s0-L20) + 0.55·sst2[s0] + 1·sst2[s1] − 0.2·yelp_polarity[s0]"
    assert default_name(terms) == "sum_0.55sst2.s0_1sst2.s1_m0.2yelp_polarity.s0"
    assert formula(terms[2:], "o", "ties", 0.5) == "P0(o) + 0.5·(ties(− 0.2·yelp_polarity[s0]))"


def test_combine_prompts_checks_its_input(tiny_store):
    p = tiny_store.load_all(task="sentences_yelp")[0]
    with pytest.raises(ValueError, match="finite"):
        combine_prompts([p], [float("nan")], p.origin)
    with pytest.raises(ValueError, match="1 weights for 2"):
        combine_prompts([p, p], [1.0], p.origin)
    with pytest.raises(ValueError, match="unknown method"):
        combine_prompts([p], [1.0], p.origin, method="avg")


def test_fewshot_cli_and_job_write_the_same_runs(minilm, tiny_store, tmp_path, queue, capsys):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root)
    common = dict(target="sentences_amazon", sources=TASKS, store_root=str(root), ks=(0, 4), seeds=(0,),
                  data_seeds=(0, 1), inits=("random", "tpv"), steps=2, limit=16, eval_limit=8, eval_every=1)
    req = FewshotRequest(out=str(tmp_path / "job"), **common)
    assert req.planned_runs() == 6  # 2 inits x (k = 0 once + k = 4 under each of 2 data seeds)
    from tpv_core.app import job_bodies

    jid = queue.submit_callable(job_bodies.fewshot_job(req, "minilm-l6", lambda _n: minilm), req.label("minilm-l6"),
                                kind="fewshot", items=req.planned_runs())
    seen = []
    while not queue.get(jid).finished:
        s = queue.get(jid)
        seen.append((s.step, s.steps))
        time.sleep(0.05)
    st = queue.get(jid)
    assert st.state == DONE, st.error
    assert st.step == st.steps == 6 and st.fraction == 1.0
    assert all(a <= b for a, b in seen)
    assert main(["experiment", "fewshot", "--backbone", "minilm-l6", "--store", str(root), "--target",
                 "sentences_amazon", "--sources", *TASKS, "--k", "0", "4", "--origin", "0", "--inits", "random", "tpv",
                 "--steps", "2", "--limit", "16", "--eval-limit", "8", "--data-seeds", "0", "1",
                 "--out", str(tmp_path / "cli")]) == 0
    job_runs = pd.read_csv(tmp_path / "job" / "fewshot_runs.csv")
    cli_runs = pd.read_csv(tmp_path / "cli" / "fewshot_runs.csv")
    assert len(job_runs) == len(cli_runs) == 6
    key = ["k", "init", "seed", "data_seed"]
    j, c = (r.sort_values(key).reset_index(drop=True) for r in (job_runs, cli_runs))
    pd.testing.assert_frame_equal(j[[*key, "steps", "score"]], c[[*key, "steps", "score"]])


def test_one_rule_for_where_the_store_is(tmp_path, monkeypatch, capsys):
    """Every command: --store, else $TPV_STORE, else the project's data/zoo (not the working directory's)."""
    from tpv_core.paths import default_store_root

    zoo = ROOT / "data" / "zoo"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TPV_STORE", raising=False)
    assert Path(default_store_root()) == zoo
    assert main(["store", "list", "--json", "--backbone", "minilm-l6", "--task", "sst2"]) == 0
    got = json.loads(capsys.readouterr().out)
    demo = ["vocab5000-s0-L20", "vocab5000-s1-L20", "vocab5000-s2-L20"]  # (the zoo's paper-recipe ones: L = 100)
    assert Path(got["root"]) == zoo and [p["origin"] for p in got["prompts"] if p["length"] == 20] == demo
    mine = tmp_path / "mine"
    monkeypatch.setenv("TPV_STORE", str(mine))
    assert Path(default_store_root()) == mine
    assert main(["store", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == str(mine)
    # a custom task registered in $TPV_STORE is found from any folder
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(12)))
    assert main(["tasks", "add", "mine_task", "--file", str(tmp_path / "t.csv"), "--text-field", "text",
                 "--label-field", "label"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(ROOT)
    assert main(["tasks", "list", "--json"]) == 0
    assert "mine_task" in {t["name"] for t in json.loads(capsys.readouterr().out)["tasks"]}
    # the positional root of older scripts still works; two different roots are refused
    assert main(["store", "list", str(zoo), "--json", "--task", "sst2", "--backbone", "minilm-l6"]) == 0
    assert [p["origin"] for p in json.loads(capsys.readouterr().out)["prompts"] if p["length"] == 20] == demo
    assert main(["store", "list", str(zoo), "--store", str(mine)]) == 2
    assert "two store roots" in capsys.readouterr().err
