"""Tests of tpv_core.tasks: registry, bundled data, templates, metrics, k-shot, custom tasks, hub."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter

import pytest

from tpv_core.tasks import (
    BUILTIN_TASKS,
    GRID,
    PAPER_TASKS,
    DataUnavailableError,
    TaskFileError,
    TaskSpec,
    UnknownTaskError,
    compute_metrics,
    describe_task,
    exact_match,
    get_task,
    k_shot,
    list_custom_tasks,
    list_tasks,
    load_split,
    make_custom_task,
    register_custom_task,
    remove_custom_task,
    split_info,
    split_sizes,
    text_to_label,
)
from tpv_core.tasks import data as data_mod

SPLITS = ("train", "validation", "test")
FAMILIES = ("seq2seq", "decoder", "encoder")
PAPER_17 = {"mnli", "qnli", "snli", "scitail", "rte", "dbpedia_14", "trec", "ag_news", "yahoo_answers_topics",
            "sst2", "yelp_polarity", "imdb", "sst5", "qqp", "mrpc", "cola", "stsb"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("TPV_DATA_DIR", raising=False)


# ------------------------------------------------------------------------------------ registry
def test_registry_has_the_papers_tasks_and_extras():
    names = {t.name for t in list_tasks()}
    assert set(PAPER_TASKS) == PAPER_17
    assert names == PAPER_17 | {"cb", "sentences_yelp", "sentences_imdb", "sentences_amazon"}
    assert all(not get_task(n).paper for n in names - PAPER_17)
    assert {t.name for t in list_tasks(paper_only=True)} == PAPER_17


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("sst-5", "sst5"), ("dbpedia", "dbpedia_14"),
                                        ("yahoo", "yahoo_answers_topics"), ("TREC", "trec"),
                                        ("yelp", "yelp_polarity"), ("STS-B", "stsb"), ("AG News", "ag_news"),
                                        ("MNLI", "mnli")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_suggestions():
    with pytest.raises(UnknownTaskError) as ei:
        get_task("mnlii")
    msg = str(ei.value)
    assert isinstance(ei.value, KeyError)
    assert "Did you mean 'mnli'" in msg and "Known tasks:" in msg and "sst5" in msg


@pytest.mark.parametrize("task", BUILTIN_TASKS, ids=lambda t: t.name)
def test_bundled_splits_load(task):
    labels_json = json.loads((data_mod.data_root() / task.bundled / "labels.json").read_text())
    if task.regression:
        assert labels_json.get("regression") is True
    else:
        # yelp_polarity: HF names "1"/"2", meanings negative/positive (we use the meanings)
        assert list(task.label_names) == labels_json.get("meaning", labels_json["names"])
    sizes = split_sizes(task)
    for split in SPLITS:
        rows = load_split(task, split, source="bundled")
        assert len(rows) > 0 and len(rows) == sizes[split]
        for r in rows:
            assert "label" in r
            assert 0 <= task.label_of(r) < task.num_labels
            if task.regression:
                assert isinstance(r["label"], float) and 0.0 <= r["label"] <= 5.0
            else:
                assert isinstance(r["label"], int)
        for r in rows[:50]:
            for fam in FAMILIES:
                text = task.format(r, fam)
                assert text.strip()
        assert len(load_split(task, split, limit=3)) == 3
    assert len(task.words) == len(task.descriptions) == task.num_labels
    assert len(set(task.words)) == task.num_labels
    assert all(w == w.lower() and " " not in w for w in task.words)


def test_label_set_sizes():
    pytest.importorskip("tpv_core.backbones.base")
    for task in BUILTIN_TASKS:
        ls = task.label_set()
        assert len(ls.words) == len(ls.descriptions) == task.num_labels


def test_spec_roundtrips_through_dict():
    for task in BUILTIN_TASKS:
        assert TaskSpec.from_dict(json.loads(json.dumps(task.to_dict()))) == task
        d = describe_task(task)
        assert d["name"] == task.name and d["sizes"]["test"] > 0 and d["metrics"]
        assert "sizes" not in task.describe()


def test_similarity_targets():
    """Two-field tasks carry one target cosine per class, in label order; bad targets are refused."""
    assert get_task("mnli").similarity_targets == (1.0, 0.5, 0.0)
    assert get_task("qqp").similarity_targets == (0.0, 1.0)  # not_duplicate, duplicate
    assert not get_task("cb").similarity_targets  # measured worse than the description readout (registry)
    stsb = get_task("stsb")
    assert stsb.similarity_targets[0] == 0.0 and stsb.similarity_targets[-1] == 1.0
    assert len(stsb.similarity_targets) == stsb.num_labels
    assert not get_task("sst2").similarity_targets
    base = get_task("rte").to_dict()
    for targets, msg in [((1.0,), "2 labels but 1"), ((1.0, 2.0), r"cosines in \[-1, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            TaskSpec.from_dict({**base, "similarity_targets": list(targets)})
    with pytest.raises(ValueError, match="two text fields"):
        TaskSpec.from_dict({**get_task("sst2").to_dict(), "similarity_targets": [0.0, 1.0]})


def test_formats():
    mnli = get_task("mnli")
    ex = {"premise": "A man sleeps.", "hypothesis": None, "label": 0}
    assert mnli.format(ex, "seq2seq") == "mnli premise: A man sleeps. hypothesis: "
    dec = mnli.format(ex, "decoder")
    assert dec.startswith("Does the premise entail the hypothesis? Answer entailment, neutral or contradiction.\n")
    assert "\nPremise: A man sleeps.\nHypothesis: \nAnswer:" in dec and dec.endswith("Answer:")
    assert mnli.format(ex, "encoder") == "A man sleeps. | "
    assert mnli.format(ex, "encoder", sep=" [SEP] ") == "A man sleeps. [SEP] "
    assert get_task("sst2").format({"sentence": "good ."}, "seq2seq") == "sst2 sentence: good ."
    with pytest.raises(ValueError):
        mnli.format(ex, "rnn")


_NEGATIVE = re.compile(r"\b(worst|awful|waste|terrible|boring|horrible|bad|poor|disappoint\w*)\b", re.I)
_POSITIVE = re.compile(r"\b(excellent|wonderful|beautiful|superb|loved|masterpiece|great|best|amazing)\b", re.I)


@pytest.mark.parametrize("name", ["sst2", "yelp_polarity", "imdb", "sentences_yelp", "sentences_imdb",
                                  "sentences_amazon", "sst5"])
def test_bundled_sentiment_labels_point_the_right_way(name):
    """The lowest label must be the most negative: its rows use negative words more often than positive
    ones, and the highest label the reverse (the bundled IMDB subset once had its labels inverted)."""
    task = get_task(name)
    assert "neg" in task.label_names[0] and "pos" in task.label_names[-1]
    field = task.text_fields[0]
    for split in SPLITS:
        rows = load_split(task, split, source="bundled")
        by_label = {lab: [r[field] for r in rows if task.label_of(r) == lab] for lab in (0, task.num_labels - 1)}

        def share(texts, words):
            return sum(bool(words.search(t)) for t in texts) / max(1, len(texts))

        low, high = by_label[0], by_label[task.num_labels - 1]
        assert share(low, _NEGATIVE) > share(low, _POSITIVE), f"{name}/{split}: label 0 reads positive"
        assert share(high, _POSITIVE) > share(high, _NEGATIVE), f"{name}/{split}: top label reads negative"


def test_sst5_is_five_class_not_sst2():
    sst5, sst2 = get_task("sst5"), get_task("sst2")
    assert sst5.num_labels == 5 and sst5.bundled == "sst5" and sst5.hub_id == "SetFit/sst5"
    r5, r2 = load_split(sst5, "train"), load_split(sst2, "train")
    assert set(Counter(r["label"] for r in r5)) == {0, 1, 2, 3, 4}
    assert set(r["label"] for r in r2) == {0, 1}
    assert [r["text"] for r in r5[:100]] != [r["sentence"] for r in r2[:100]]


def test_stsb_splits_disjoint_and_grid():
    stsb = get_task("stsb")
    pairs = {s: {(r["sentence1"], r["sentence2"]) for r in load_split(stsb, s)} for s in SPLITS}
    assert not pairs["validation"] & pairs["test"]
    assert not pairs["train"] & pairs["test"]
    assert len(GRID) == 26 and stsb.num_labels == 26 and stsb.words[12] == "2.4"
    assert stsb.descriptions[12] == "The sentences have similarity 2.4 out of 5."
    for i, v in enumerate(GRID):
        assert stsb.label_of({"label": v}) == i and stsb.label_value(i) == v
    assert stsb.label_of({"label": 3.75}) == 19  # 3.8
    assert stsb.label_of({"label": 0.05}) == 0
    assert stsb.label_of({"label": 4.99}) == 25
    assert stsb.label_of({"label": 0.1}) == 1  # half-up


# ------------------------------------------------------------------------------------ metrics
def test_exact_match_compares_whole_strings():
    assert not exact_match("entailment", "entailment_extra_long")
    long_a, long_b = "not_entailment_because_of_x", "not_entailment_because_of_y"
    assert long_a[:16] == long_b[:16] and not exact_match(long_a, long_b)
    assert exact_match("  Not_Entailment \n", "not_entailment")
    assert exact_match("very   positive", "Very positive")


def test_text_to_label():
    assert text_to_label(get_task("mnli"), " Contradiction ") == 2
    assert text_to_label(get_task("mnli"), "contradiction.") is None
    assert text_to_label(get_task("ag_news"), "sci/tech") == 3  # label name
    assert text_to_label(get_task("qnli"), "not_entailment") == 1
    stsb = get_task("stsb")
    assert text_to_label(stsb, "2.4") == 12 and text_to_label(stsb, "3") == 15
    assert text_to_label(stsb, "2.5") is None and text_to_label(stsb, "") is None


def test_compute_metrics():
    mrpc = get_task("mrpc")
    gold = [1, 1, 0, 0, 1]
    m = compute_metrics(mrpc, [1, 0, 0, 1, None], gold)
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))  # tp=1 fp=1 fn=2
    mnli = get_task("mnli")
    m = compute_metrics(mnli, [0, 1, 2, 2], [{"label": 0}, {"label": 1}, {"label": 2}, {"label": 1}])
    assert m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    stsb = get_task("stsb")
    rows = [{"label": s} for s in (0.0, 1.3, 2.5, 4.1, 5.0)]
    preds = [stsb.label_of(r) for r in rows]
    m = compute_metrics(stsb, preds, rows)
    assert set(m) == {"pearson", "spearman", "accuracy"}
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] > 0.99 and m["accuracy"] == 1.0
    assert compute_metrics(stsb, [0] * 5, rows)["pearson"] == 0.0
    with pytest.raises(ValueError):
        compute_metrics(mrpc, [1], gold)


# ------------------------------------------------------------------------------------ k-shot
def test_k_shot_stratified_seeded():
    task = get_task("mnli")
    rows = load_split(task, "train")
    a = k_shot(rows, 12, seed=3, task=task)
    assert len(a) == 12 and Counter(r["label"] for r in a) == {0: 4, 1: 4, 2: 4}
    assert a == k_shot(rows, 12, seed=3, task=task)
    assert a != k_shot(rows, 12, seed=4, task=task)
    b = k_shot(rows, 16, seed=0, task=task)
    assert len(b) == 16 and sorted(Counter(r["label"] for r in b).values()) == [5, 5, 6]
    with pytest.raises(ValueError, match="exceeds"):
        k_shot(rows[:10], 11, seed=0, task=task)
    only_two = [r for r in rows if r["label"] != 2][:50] + [r for r in rows if r["label"] == 2][:1]
    with pytest.raises(ValueError, match="contradiction"):
        k_shot(only_two, 9, seed=0, task=task)
    stsb = get_task("stsb")
    s = k_shot(load_split(stsb, "train"), 12, seed=0, task=stsb)
    assert Counter(int(r["label"]) if r["label"] < 5 else 5 for r in s) == {c: 2 for c in range(6)}


# ------------------------------------------------------------------------------------ custom tasks
def _write_csv(path, n=40):
    lines = ["review,sentiment,extra"]
    for i in range(n):
        lab = ["pos", "neg", "meh"][i % 3]
        lines.append(f'"text number {i}, with a comma",{lab},x')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_custom_csv_roundtrip(tmp_path):
    src = tmp_path / "reviews.csv"
    _write_csv(src)
    spec = make_custom_task("My-Reviews", src, "review", "sentiment")
    assert spec.name == "my-reviews" and spec.label_names == ("meh", "neg", "pos")
    assert spec.words == ("meh", "neg", "pos") and spec.descriptions[2] == "This text is about pos."
    assert spec.metrics == ("accuracy", "macro_f1")
    before = {s: load_split(spec, s) for s in SPLITS}
    assert [len(before[s]) for s in SPLITS] == [32, 4, 4]
    all_texts = [r["review"] for s in SPLITS for r in before[s]]
    assert len(set(all_texts)) == 40 and all_texts[0].startswith("text number")
    root = tmp_path / "store"
    stored = register_custom_task(spec, root)
    assert (root / "_tasks" / "my-reviews" / "spec.json").is_file()
    again = get_task("my_reviews", root)  # restart: read back from disk
    assert again == stored and again.custom and not again.paper
    for s in SPLITS:
        rows = load_split(again, s)
        assert [(r["review"], r["label"]) for r in rows] == [(r["review"], r["label"]) for r in before[s]]
        assert again.format(rows[0], "decoder").endswith("Answer:")
    assert "my-reviews" in {t.name for t in list_tasks(root)}
    assert split_info(again)["rows"] == {"train": 32, "validation": 4, "test": 4}
    with pytest.raises(UnknownTaskError):
        get_task("my-reviews")  # no root given
    assert remove_custom_task("my-reviews", root) and not list_custom_tasks(root)


def test_custom_jsonl_folder_roundtrip(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for split, n in (("train", 20), ("dev", 6), ("test", 8)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"a": f"{split} a {i}", "b": f"b {i} é", "y": i % 2}) + "\n")
    spec = make_custom_task("pairs", folder, ["a", "b"], "y", label_words={"0": "no", "1": "yes"},
                            label_descriptions=["They differ.", "They match."], family="paraphrase")
    assert spec.label_names == ("0", "1") and spec.words == ("no", "yes") and spec.metrics == ("accuracy", "f1")
    root = tmp_path / "root"
    register_custom_task(spec, root)
    t = get_task("PAIRS", root)
    rows = {s: load_split(t, s) for s in SPLITS}
    assert [len(rows[s]) for s in SPLITS] == [20, 6, 8]
    assert rows["validation"][0] == {"a": "dev a 0", "b": "b 0 é", "label": 0}
    assert t.format(rows["test"][1], "seq2seq") == "pairs a: test a 1 b: b 1 é"
    assert not t.similarity_targets
    # the encoder's similarity readout for a custom pair task: one target cosine per label, kept on disk
    sim = make_custom_task("pairs2", folder, ["a", "b"], "y", similarity_targets={"0": 0.0, "1": 1.0})
    register_custom_task(sim, root)
    assert get_task("pairs2", root).similarity_targets == (0.0, 1.0)
    with pytest.raises(TaskFileError, match="two text fields"):
        make_custom_task("one", folder, ["a"], "y", similarity_targets=[0, 1])
    with pytest.raises(TaskFileError, match=r"\[-1, 1\]"):
        make_custom_task("pairs3", folder, ["a", "b"], "y", similarity_targets=[0, 2])
    with pytest.raises(TaskFileError, match="1 given for 2 labels"):
        make_custom_task("pairs3", folder, ["a", "b"], "y", similarity_targets=[1])


@pytest.mark.parametrize("case", ["missing", "columns", "empty", "header_only", "one_class", "latin1",
                                  "clash", "clash_alias", "extension", "no_train", "bad_json"])
def test_custom_bad_files(tmp_path, case):
    p = tmp_path / "data.csv"
    name, text_field, match = "mine", "text", None
    if case == "missing":
        p, match = tmp_path / "nope.csv", "not found"
    elif case == "columns":
        p.write_text("body,label\nhello,a\nbye,b\n", encoding="utf-8")
        match = r"missing column\(s\) 'text'; columns found: 'body', 'label'"
    elif case == "empty":
        p.write_text("", encoding="utf-8")
        match = "empty"
    elif case == "header_only":
        p.write_text("text,label\n", encoding="utf-8")
        match = "no data rows"
    elif case == "one_class":
        p.write_text("text,label\na,x\nb,x\nc,x\n", encoding="utf-8")
        match = "only one class"
    elif case == "latin1":
        p.write_bytes("text,label\ncaf\u00e9,a\nbar,b\n".encode("latin-1"))
        match = "not UTF-8"
    elif case in ("clash", "clash_alias"):
        _write_csv(p)
        name, text_field, match = ("sst2" if case == "clash" else "SST-2"), "review", "built-in"
    elif case == "extension":
        p = tmp_path / "data.xlsx"
        p.write_text("x", encoding="utf-8")
        match = "unsupported file type"
    elif case == "no_train":
        p = tmp_path / "folder"
        p.mkdir()
        (p / "test.csv").write_text("text,label\na,b\n", encoding="utf-8")
        match = "no train file"
    elif case == "bad_json":
        p = tmp_path / "data.jsonl"
        p.write_text('{"text": "a", "label": 1}\n{oops\n', encoding="utf-8")
        match = r"data.jsonl:2"
    with pytest.raises(TaskFileError, match=match):
        make_custom_task(name, p, text_field, "sentiment" if case in ("clash", "clash_alias") else "label")


# ------------------------------------------------------------------------------------ hub
def _fake_hub(monkeypatch, dd, calls):
    datasets = pytest.importorskip("datasets")

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        return dd

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_hub_small_dataset_halves_validation(monkeypatch):
    datasets = pytest.importorskip("datasets")
    train = {"sentence1": [f"t{i}" for i in range(60)], "sentence2": ["x"] * 60, "label": [i % 2 for i in range(60)]}
    val_labels = [i % 2 for i in range(41)]
    val_labels[5] = -1
    val = {"sentence1": [f"v{i}" for i in range(41)], "sentence2": ["y"] * 41, "label": val_labels}
    test = {"sentence1": ["z"] * 5, "sentence2": ["z"] * 5, "label": [-1] * 5}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in
                               (("train", train), ("validation", val), ("test", test))})
    calls = []
    _fake_hub(monkeypatch, dd, calls)
    rte = get_task("rte")
    rows = {s: load_split(rte, s, source="hub") for s in SPLITS}
    assert calls[0] == ("nyu-mll/glue", "rte")
    assert len(rows["train"]) == 60
    assert len(rows["validation"]) == 20 and len(rows["test"]) == 20
    v = {r["sentence1"] for r in rows["validation"]}
    t = {r["sentence1"] for r in rows["test"]}
    assert not v & t and v | t == {f"v{i}" for i in range(41)} - {"v5"}
    assert rows == {s: load_split(rte, s, source="hub") for s in SPLITS}  # deterministic
    assert len(load_split(rte, "test", source="hub", limit=4)) == 4


def test_hub_large_dataset_holds_out_train(monkeypatch):
    datasets = pytest.importorskip("datasets")
    n = 10_050
    train = {"question1": [f"q{i}" for i in range(n)], "question2": ["x"] * n, "label": [i % 2 for i in range(n)]}
    val = {"question1": [f"v{i}" for i in range(30)], "question2": ["y"] * 30, "label": [1] * 30}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                               "validation": datasets.Dataset.from_dict(val)})
    _fake_hub(monkeypatch, dd, [])
    qqp = get_task("qqp")
    rows = {s: load_split(qqp, s, source="hub") for s in SPLITS}
    assert len(rows["validation"]) == 1000 and len(rows["train"]) == n - 1000
    assert not {r["question1"] for r in rows["validation"]} & {r["question1"] for r in rows["train"]}
    assert [r["question1"] for r in rows["test"]] == [f"v{i}" for i in range(30)]


def test_hub_label_mapping(monkeypatch):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"premise": ["p"] * 4, "hypothesis": ["h"] * 4,
                                             "label": ["entails", "neutral", "entails", "neutral"]}),
        "test": datasets.Dataset.from_dict({"premise": ["p"] * 4, "hypothesis": ["h"] * 4,
                                            "label": ["neutral"] * 4})})
    _fake_hub(monkeypatch, dd, [])
    assert [r["label"] for r in load_split(get_task("scitail"), "train", source="hub")] == [0, 1, 0, 1]
    dd2 = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"question_title": ["a", "b"], "question_content": ["c", None],
                                             "best_answer": ["d", "e"], "topic": [3, 9]}),
        "test": datasets.Dataset.from_dict({"question_title": ["f", "g"], "question_content": ["h", "i"],
                                            "best_answer": ["j", "k"], "topic": [0, 1]})})
    _fake_hub(monkeypatch, dd2, [])
    yahoo = get_task("yahoo")
    rows = load_split(yahoo, "train", source="hub")
    assert [r["label"] for r in rows] == [3, 9] and yahoo.format(rows[1], "encoder") == "b | "


def test_offline_without_bundle_raises(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    no_bundle = dataclasses.replace(get_task("mnli"), bundled=None)
    with pytest.raises(DataUnavailableError, match="nyu-mll/glue.*go online"):
        load_split(no_bundle, "train")  # auto -> hub
    with pytest.raises(DataUnavailableError, match="bundled"):
        load_split(get_task("mnli"), "train", source="hub")
    assert len(load_split(get_task("mnli"), "test", limit=2)) == 2  # auto prefers bundled
    assert "no local data" in " ".join(split_info(no_bundle)["caveats"])


def test_split_info_and_data_dir_override(tmp_path, monkeypatch):
    info = split_info(get_task("scitail"))
    assert info["rows"]["test"] == 1006 and "official test split" in " ".join(info["caveats"])
    yahoo = split_info(get_task("yahoo"))
    assert yahoo["small_test"] and yahoo["test_se_points"] == 5.0
    assert "train split" in " ".join(split_info(get_task("yelp"))["caveats"])
    copy = tmp_path / "data" / "tasks" / "cb"
    shutil.copytree(data_mod.data_root() / "cb", copy)
    (copy / "test.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": 2}\n', encoding="utf-8")
    monkeypatch.setenv("TPV_DATA_DIR", str(tmp_path / "data"))
    assert load_split(get_task("cb"), "test") == [{"premise": "p", "hypothesis": "h", "label": 2}]
    with pytest.raises(DataUnavailableError, match="TPV_DATA_DIR"):
        load_split(get_task("mnli"), "test", source="bundled")
    with pytest.raises(ValueError):
        load_split(get_task("cb"), "dev")


def test_data_functions_take_a_spec_not_a_name():
    """`tasks.data` sits below the registry: a name is refused with the lookup to use instead."""
    with pytest.raises(TypeError, match=r"get_task\('sst2'\)"):
        load_split("sst2", "train")
    with pytest.raises(TypeError, match="TaskSpec"):
        split_sizes("sst2")
