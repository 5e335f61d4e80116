"""The `tpv` commands as a user runs them (MiniLM, tiny budgets)."""

import json

import pytest

from tpv_core.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tasks_and_models_list(capsys):
    code, out, _ = run(capsys, "tasks", "list", "--json")
    names = {t["name"] for t in json.loads(out)["tasks"]}
    assert code == 0 and {"mnli", "sst5", "stsb", "yahoo_answers_topics"} <= names
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "minilm-l6" in out and "smollm2-135m" in out


def test_train_eval_combine_cycle(capsys, tmp_path):
    store = str(tmp_path / "zoo")
    common = ["--backbone", "minilm-l6", "--store", store]
    code, out, err = run(capsys, "train", *common, "--task", "sentences_yelp", "sentences_imdb", "--origin", "0-1",
                         "--steps", "3", "--length", "4", "--eval-limit", "8", "--json")
    assert code == 0, err
    assert len(json.loads(out)["trained"]) == 4
    code, out, err = run(capsys, "train", *common, "--task", "sentences_yelp", "--origin", "0", "--steps", "3",
                         "--length", "4")
    assert code == 0 and "skip" in err  # already in the store: resumable grids skip it
    code, out, _ = run(capsys, "store", "list", store)
    assert "4 prompt(s)" in out
    code, out, _ = run(capsys, "store", "list", store, "--norms", "--json")
    rows = json.loads(out)["prompts"]
    from tpv_core.store import PromptStore

    p = PromptStore(store).load("minilm-l6", rows[0]["task"], rows[0]["origin"])
    assert rows[0]["tau_norm"] == pytest.approx(float((p.tensor.float() - p.origin.require_tensor().float()).norm()))
    assert all(r["tau_over_p0"] == pytest.approx(r["tau_norm"] / r["p0_norm"]) for r in rows)
    code, out, _ = run(capsys, "eval", *common, "--task", "sentences_yelp", "--limit", "16", "--json")
    res = json.loads(out)["results"]
    assert code == 0 and len(res) == 2 and all(r["n"] == 16 and r["prompt"] == "tuned" for r in res)
    code, out, _ = run(capsys, "eval", *common, "--task", "sentences_yelp", "--untuned", "--origin", "0",
                       "--length", "4", "--limit", "16", "--json")
    assert code == 0 and json.loads(out)["results"][0]["prompt"] == "untuned"
    code, out, err = run(capsys, "combine", *common, "--vector", "sentences_yelp:0", "sentences_imdb:0",
                         "--weights", "1", "0", "--limit", "16", "--json", "--save-as", "combo",
                         "--export", str(tmp_path / "adapter"))
    assert code == 0, err
    rows = {r["task"]: r for r in json.loads(out)["results"]}
    # weight 1 on yelp and 0 on imdb reproduces the yelp prompt
    assert rows["sentences_yelp"]["combined"] == pytest.approx(rows["sentences_yelp"]["single"])
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "zoo" / "minilm-l6" / "combo").is_dir()


def test_prompts_from_another_readout_are_retrained(capsys, tmp_path):
    """A stored encoder prompt for a pair task tuned under the description readout (every one stored before
    the similarity readout): `tpv eval` refuses it with the fix, `tpv train` retrains it instead of skipping."""
    from tpv_core.prompts import SoftPrompt
    from tpv_core.store import PromptStore

    store = PromptStore(tmp_path / "zoo")
    common = ["--backbone", "minilm-l6", "--store", str(store.root), "--task", "rte", "--origin", "0"]
    code, _, err = run(capsys, "train", *common, "--steps", "1", "--length", "4", "--eval-limit", "4")
    assert code == 0, err
    (p,) = store.load_all("minilm-l6", "rte")
    meta = {k: v for k, v in p.metadata.items() if k != "readout"}
    store.save(SoftPrompt(p.tensor, p.origin, p.task, p.backbone, meta), overwrite=True)
    code, _, err = run(capsys, "eval", *common, "--limit", "4")
    assert code != 0 and "'descriptions' readout" in err and "tpv train" in err
    code, _, err = run(capsys, "train", *common, "--steps", "1", "--length", "4", "--eval-limit", "4")
    assert code == 0 and "retrain rte" in err
    assert store.load_all("minilm-l6", "rte")[0].metadata["readout"] == {"rte": "similarity"}


def test_clear_errors(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--backbone", "minilm-l6", "--task", "no_such_task", "--store", str(tmp_path))
    assert code == 2 and "no_such_task" in err
    code, _, err = run(capsys, "eval", "--backbone", "minilm-l6", "--task", "sst2", "--store", str(tmp_path))
    assert code == 2 and "tpv train" in err


def test_tasks_add_custom(capsys, tmp_path):
    rows = ["text,label"] + [f"good thing number {i},pos" for i in range(10)] + [f"bad thing number {i},neg" for i in range(10)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run(capsys, "tasks", "add", "mine", "--file", str(tmp_path / "mine.csv"), "--text-field", "text",
                         "--label-field", "label", "--store", str(tmp_path / "zoo"))
    assert code == 0, err
    assert "mine" in out and "neg, pos" in out
    code, out, _ = run(capsys, "tasks", "list", "--store", str(tmp_path / "zoo"), "--json")
    assert "mine" in {t["name"] for t in json.loads(out)["tasks"]}
    code, _, err = run(capsys, "tasks", "add", "bad", "--file", str(tmp_path / "mine.csv"), "--text-field", "nope",
                       "--label-field", "label", "--store", str(tmp_path / "zoo"))
    assert code == 2 and "nope" in err


def test_tasks_add_pair_task_read_by_similarity(capsys, tmp_path):
    rows = ["s1,s2,label"] + [f"a cat sits {i},a cat sits {i},same" for i in range(8)] + \
        [f"a cat sits {i},stocks fell sharply {i},diff" for i in range(8)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    store = str(tmp_path / "zoo")
    code, _, err = run(capsys, "tasks", "add", "mypairs", "--file", str(tmp_path / "pairs.csv"), "--text-field", "s1",
                       "s2", "--label-field", "label", "--similarity-target", "0", "1", "--store", store)
    assert code == 0, err
    from tpv_core.backbones import load_backbone
    from tpv_core.evaluation import evaluate
    from tpv_core.tasks import get_task

    task, bb = get_task("mypairs", store), load_backbone("minilm-l6", device="cpu")
    assert task.similarity_targets == (0.0, 1.0) and bb.readout(task) == "similarity"  # labels sorted: diff, same
    # with no prompt, MiniLM separates identical from unrelated sentences by their cosine alone
    assert evaluate(bb, task, None, split="train").metrics["accuracy"] >= 0.9
