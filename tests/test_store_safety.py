"""Store robustness beyond bad files: finite numbers only, no silent overwrite (locks), checksums and
`tpv store verify`, custom-task re-registration, argument hygiene."""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import time

import pytest
import torch

from tpv_core.cli import main
from tpv_core.combine import combine_prompt, lambda_search, merge
from tpv_core.prompts import NonFiniteValueError, SoftPrompt, TaskPromptVector, make_origin
from tpv_core.peft_io import export_peft
from tpv_core.store import (ChecksumError, NonFiniteError, PromptExistsError, PromptStore, StoreLockedError,
                            load_prompt, read_metadata)
from tpv_core.store_schema import meta_checksum

EMB = torch.randn(6000, 16, generator=torch.Generator().manual_seed(0))


def prompt(task="sst2", seed=0, shift=0.1, backbone="toy"):
    o = make_origin(embeddings=EMB, backbone_name=backbone, seed=seed, length=4)
    return SoftPrompt(o.tensor + shift, o, task, backbone, {"metrics": {"accuracy": 0.5}, "steps": 3})


# ------------------------------------------------------------------------------------------ finite numbers
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_and_coefficients_are_refused(bad, tmp_path):
    a, b = prompt("a").vector(), prompt("b", shift=0.3).vector()
    origin = prompt().origin
    with pytest.raises(NonFiniteValueError, match="weight 1"):
        merge("sum", [a, b], [bad, 1.0])
    for method in ("ties", "dare"):
        with pytest.raises(NonFiniteValueError, match="finite"):
            merge(method, [a, b], [1.0, bad])
    with pytest.raises(NonFiniteValueError, match="lambda"):
        combine_prompt([a, b], [1.0, 1.0], origin, coef=bad)
    with pytest.raises(NonFiniteValueError):
        a * bad
    with pytest.raises(NonFiniteValueError):
        TaskPromptVector.sum([a, b], [1.0, bad])
    with pytest.raises(NonFiniteValueError):
        a.apply_to(origin, bad)
    with pytest.raises(NonFiniteValueError, match="lambda grid"):
        lambda_search(lambda lam: 1.0, grid=[0.0, bad])
    # a prompt holding a non-finite value is never saved or exported
    p = prompt()
    p.tensor[0, 0] = bad
    store = PromptStore(tmp_path)
    with pytest.raises(NonFiniteValueError):
        store.save(p)
    with pytest.raises(NonFiniteValueError):
        export_peft(p.tensor, tmp_path / "adapter", base_model="toy")
    assert not any(tmp_path.rglob("*.safetensors"))


def test_overflowing_combination_is_refused():
    big = prompt("a", shift=3e38).vector()
    with pytest.raises(NonFiniteValueError, match="NaN or infinite"):
        combine_prompt([big, big], [1.0, 1.0], prompt().origin)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_cli_refuses_non_finite_weights_before_loading_anything(bad, tmp_path, capsys):
    store = PromptStore(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["combine", "--backbone", "minilm-l6", "--store", str(tmp_path), "--vector", "a:0", "b:0",
              "--weights", bad, "1", "--save-as", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # argparse reads a leading '-inf' as an option: refused too, before anything is loaded
    assert f"'{bad}' is not a finite number" in err or (bad == "-inf" and "unrecognized arguments: -inf" in err)
    assert store.index().empty


def test_loading_a_non_finite_file_is_refused(tmp_path):
    store = PromptStore(tmp_path)
    path = store.save(prompt())
    blob = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    start = header["prompt"]["data_offsets"][0]
    blob[8 + n + start : 8 + n + start + 4] = struct.pack("<f", math.nan)
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match="tensor bytes"):  # the checksum sees it first
        load_prompt(path)
    meta = json.loads(header["__metadata__"]["tpv"])  # without checksums (an old file) the finite check sees it
    meta.pop("checksum"), meta.pop("meta_checksum")
    header["__metadata__"]["tpv"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(blob[8 + n :]))
    with pytest.raises(NonFiniteError, match="'prompt'.*NaN"):
        load_prompt(path)


# ------------------------------------------------------------------------------------------ overwrite / locks
def test_save_refuses_an_existing_name_unless_asked(tmp_path):
    store = PromptStore(tmp_path)
    path = store.save(prompt())
    before = path.read_bytes()
    with pytest.raises(PromptExistsError, match="already holds"):
        store.save(prompt(shift=0.5))
    assert path.read_bytes() == before
    store.save(prompt(shift=0.5), overwrite=True)
    assert torch.allclose(store.load("toy", "sst2", prompt().origin.id).tensor, prompt(shift=0.5).tensor)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no lock or temp file left


def test_two_threads_saving_the_same_name_one_wins(tmp_path, monkeypatch):
    import tpv_core.store as st

    store = PromptStore(tmp_path)
    real_write = st.atomic_write_bytes

    def slow_write(path, data):  # widen the window between the existence check and the rename
        time.sleep(0.2)
        return real_write(path, data)

    monkeypatch.setattr(st, "atomic_write_bytes", slow_write)
    barrier = threading.Barrier(2)
    outcome: dict[int, str] = {}

    def worker(i: int) -> None:
        barrier.wait()
        try:
            store.save(prompt(shift=0.1 * (i + 1)))
            outcome[i] = "saved"
        except PromptExistsError as exc:
            outcome[i] = f"refused: {exc}"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(v.split(":")[0] for v in outcome.values()) == ["refused", "saved"], outcome
    winner = next(i for i, v in outcome.items() if v == "saved")
    assert torch.allclose(store.load("toy", "sst2", prompt().origin.id).tensor, prompt(shift=0.1 * (winner + 1)).tensor)


def test_a_held_lock_makes_the_second_save_wait_then_fail_clearly(tmp_path, monkeypatch):
    import tpv_core.store as st

    store = PromptStore(tmp_path)
    target = store.path_for("toy", "sst2", prompt().origin.id)
    monkeypatch.setattr(st, "LOCK_TIMEOUT_S", 0.3)
    with store.lock(target):
        t0 = time.perf_counter()
        with pytest.raises(StoreLockedError, match="another save"):
            store.save(prompt())
        assert time.perf_counter() - t0 >= 0.3
    store.save(prompt())  # released: goes through


# ------------------------------------------------------------------------------------------ checksums / verify
def strip_checksums(path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["tpv"])
    meta.pop("checksum"), meta.pop("meta_checksum")
    header["__metadata__"]["tpv"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + n :])


def test_checksums_are_written_and_verified(tmp_path):
    store = PromptStore(tmp_path)
    path = store.save(prompt())
    meta = read_metadata(path)
    assert meta["checksum"].startswith("sha256:") and meta["meta_checksum"] == meta_checksum(meta)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x01  # one bit of the origin tensor
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=str(path)):
        load_prompt(path)


def test_store_verify_fixes_missing_checksums_and_cleans_stale_temp_files(tmp_path, capsys):
    store = PromptStore(tmp_path)
    good = store.save(prompt(seed=0))
    old = store.save(prompt(seed=1))
    bad = store.save(prompt(seed=2))
    strip_checksums(old)
    bad.write_bytes(bad.read_bytes()[:-8])
    stale = good.parent / ".vocab5000-s0-L4.safetensors.abc.tmp"
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = good.parent / ".vocab5000-s1-L4.safetensors.def.tmp"
    fresh.write_bytes(b"a save in progress")
    before = load_prompt(old)

    assert main(["store", "verify", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["ok"] == 1 and report["counts"]["no-checksum"] == 1 and report["counts"]["bad"] == 1
    assert report["counts"]["removed-tmp"] == 1 and not stale.exists() and fresh.exists()

    bad.unlink()
    assert main(["store", "verify", str(tmp_path), "--fix-missing"]) == 0
    assert "1 fixed" in capsys.readouterr().out
    after = load_prompt(old)
    assert after.metadata["checksum"] and torch.equal(after.tensor, before.tensor)
    assert {k: v for k, v in after.metadata.items() if "checksum" not in k} == before.metadata
    assert main(["store", "verify", str(tmp_path)]) == 0


def test_every_shipped_zoo_file_carries_a_valid_checksum():
    from pathlib import Path

    from tpv_core.store_verify import verify_store

    root = Path(__file__).resolve().parent.parent / "data" / "zoo"
    items = [i for i in verify_store(root, stale_after_s=math.inf) if i.status not in ("removed-tmp", "checkpoint")]
    assert len(items) >= 81 and {i.status for i in items} == {"ok"}, [i for i in items if i.status != "ok"][:3]


# ------------------------------------------------------------------------------------------ custom tasks
def test_re_registering_a_custom_task_with_other_labels_is_refused(tmp_path, capsys):
    two = tmp_path / "two.csv"
    two.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(30)))
    three = tmp_path / "three.csv"
    three.write_text("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(30)))
    store = str(tmp_path / "zoo")
    add = ["tasks", "add", "mine", "--text-field", "text", "--label-field", "label", "--store", store]
    assert main(add + ["--file", str(two)]) == 0
    assert main(add + ["--file", str(two)]) == 0  # the same definition again: fine, nothing changes
    o = make_origin(embeddings=EMB, backbone_name="toy", seed=0, length=4)
    PromptStore(store).save(SoftPrompt(o.tensor + 1, o, "mine", "toy", {}))
    capsys.readouterr()
    assert main(add + ["--file", str(three)]) == 2
    err = capsys.readouterr().err
    assert "already registered" in err and "labels" in err and "mine/vocab5000-s0-L4.safetensors" in err
    assert "--replace" in err
    assert main(add + ["--file", str(three), "--replace"]) == 0
    out = capsys.readouterr().out
    assert "3 labels" in out and "mine/vocab5000-s0-L4.safetensors" in out


def test_one_label_spelled_two_ways_is_refused(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("text,label\n" + "".join(f"row {i},{['1', '1.0', '0'][i % 3]}\n" for i in range(30)))
    assert main(["tasks", "add", "amb", "--file", str(f), "--text-field", "text", "--label-field", "label",
                 "--store", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err
    assert "'1' and '1.0'" in err and "separate classes" in err


# ------------------------------------------------------------------------------------------ argument hygiene
@pytest.mark.parametrize("argv, says", [
    (["eval", "--backbone", "minilm-l6", "--task", "sst2", "--limit", "-3"], "'-3' is below 1"),
    (["train", "--backbone", "minilm-l6", "--task", "sst2", "--steps", "-1"], "'-1' is below 0"),
    (["train", "--backbone", "minilm-l6", "--task", "sst2", "--lr", "nan"], "'nan' is not a finite number"),
    (["experiment", "fewshot", "--backbone", "minilm-l6", "--target", "imdb", "--sources", "sst2", "--out", "x",
      "--k", "-5"], "'-5' is below 0"),
])
def test_bad_numbers_are_refused_by_the_parser(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_bad_origins_name_what_was_passed():
    from tpv_core.cli.common import parse_seeds

    assert parse_seeds(["0-2", "5", "1,7"]) == [0, 1, 2, 5, 7]
    for bad in ("zero", "2-0", "1.5", "0-x"):
        with pytest.raises(ValueError, match="--origin .* is not a seed"):
            parse_seeds([bad])


def test_fewshot_k_beyond_the_data_names_the_k_asked_for(tmp_path):
    from tpv_core.experiments.fewshot import run_fewshot
    from tpv_core.tasks import get_task, load_split

    n = len(load_split(get_task("imdb"), "train"))
    with pytest.raises(ValueError, match=f"k=100000 exceeds the {n} training rows of imdb"):
        run_fewshot(None, PromptStore(tmp_path), "imdb", ["sst2"], tmp_path, ks=[5, 100000], strict_ks=True)
    with pytest.raises(ValueError, match="whole numbers >= 0"):
        run_fewshot(None, PromptStore(tmp_path), "imdb", ["sst2"], tmp_path, ks=[-1])


def test_negative_row_limit_is_refused():
    from tpv_core.tasks.data import shuffled_rows

    with pytest.raises(ValueError, match="got -3"):
        shuffled_rows([{"a": 1}] * 5, -3)


def test_eval_skips_a_damaged_prompt_and_scores_the_others(tmp_path, tiny_store, minilm, monkeypatch, capsys):
    import shutil

    from tpv_core.cli import evaluate_cmd

    monkeypatch.setattr(evaluate_cmd, "load_backbone_for_cli", lambda args: minilm)
    root = tmp_path / "zoo"
    shutil.copytree(tiny_store.root, root)
    damaged = root / "minilm-l6" / "sentences_yelp" / "vocab5000-s0-L4.safetensors"
    blob = bytearray(damaged.read_bytes())
    blob[-5] ^= 0x10
    damaged.write_bytes(bytes(blob))
    argv = ["eval", "--backbone", "minilm-l6", "--task", "sentences_yelp", "--store", str(root), "--limit", "8",
            "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"skipped: {damaged}: field 'checksum'" in captured.err
    assert [r["origin"] for r in json.loads(captured.out)["results"]] == ["vocab5000-s1-L4"]
    (root / "minilm-l6" / "sentences_yelp" / "vocab5000-s1-L4.safetensors").unlink()
    assert main(argv) == 2
    assert "none of the stored sentences_yelp prompts for minilm-l6 can be read" in capsys.readouterr().err


def test_a_stored_prompt_of_another_width_is_refused_for_a_backbone():
    from types import SimpleNamespace

    from tpv_core.prompts import PromptMismatchError
    from tpv_core.tasks import get_task
    from tpv_core.readout import check_readout

    narrow = SimpleNamespace(name="toy", dim=8, readout=lambda task: "descriptions")
    with pytest.raises(PromptMismatchError, match="4 x 16 prompt.*width 8"):
        check_readout(prompt(), narrow, get_task("sst2"))
    wide = SimpleNamespace(name="toy", dim=16, readout=lambda task: "descriptions")
    assert check_readout(prompt(), wide, get_task("sst2")).dim == 16
